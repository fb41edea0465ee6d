package com.example.clash;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.nanofaas.function.FunctionHandler;
import dev.nanofaas.function.Request;
import dev.nanofaas.function.Response;
import java.util.LinkedHashMap;
import java.util.Map;

/** A handler that bundles its own "Jackson" (a stand-in of another version) and uses it. */
public final class ClashHandler implements FunctionHandler {

    @Override
    public Object handle(Request request) {
        Map<String, String> out = new LinkedHashMap<>();
        out.put("jackson", ObjectMapper.VERSION);
        out.put("own", Boolean.toString(ObjectMapper.class.getClassLoader() == getClass().getClassLoader()));
        out.put("contextLoader", Boolean.toString(
                Thread.currentThread().getContextClassLoader() == getClass().getClassLoader()));
        out.put("input", request.inputJson());
        Object name = request.inputObject().get("name");
        out.put("name", String.valueOf(name));
        // The runtime's own classes are not visible, only the function API and the JDK.
        out.put("runtimeVisible", Boolean.toString(visible("dev.nanofaas.runtime.Main")));
        if ("bad".equals(name)) {
            return Response.json("{not json");
        }
        return Response.json(new ObjectMapper().writeFlat(out));
    }

    private static boolean visible(String name) {
        try {
            Class.forName(name, false, ClashHandler.class.getClassLoader());
            return true;
        } catch (ClassNotFoundException e) {
            return false;
        }
    }
}
