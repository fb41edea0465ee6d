package dev.nanofaas.examples;

import dev.nanofaas.function.FunctionHandler;
import dev.nanofaas.function.Request;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * hello-java: {@code {"name": "Ada"}} answers {@code {"greeting": "Hello, Ada!", "runtime": "java",
 * "pid": ...}}; {@code {"fail": "why"}} throws, which the runtime answers 500 HANDLER_ERROR.
 *
 * <p>Written against the function API only (JDK types): built with Maven from this folder's
 * pom.xml, see README.md.
 */
public final class Hello implements FunctionHandler {

    private static final long PID = ProcessHandle.current().pid();

    @Override
    public Object handle(Request request) {
        Object input = request.input();
        if (input != null && !(input instanceof Map)) {
            throw new IllegalArgumentException(
                    "input must be an object like {\"name\": \"Ada\"}, got " + request.inputJson());
        }
        Map<String, Object> in = request.inputObject();
        if (in.containsKey("fail")) {
            throw new IllegalStateException("failing on purpose: " + in.get("fail"));
        }
        Object given = in.get("name");
        String name = given instanceof String s && !s.isEmpty() ? s : "world";
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("greeting", "Hello, " + name + "!");
        out.put("runtime", "java");
        out.put("pid", PID);
        return out;
    }
}
