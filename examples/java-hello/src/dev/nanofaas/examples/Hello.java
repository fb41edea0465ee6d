package dev.nanofaas.examples;

import com.fasterxml.jackson.databind.JsonNode;
import dev.nanofaas.runtime.FunctionHandler;
import dev.nanofaas.runtime.FunctionLog;
import dev.nanofaas.runtime.InvocationRequest;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * hello-java: {@code {"name": "Ada"}} answers {@code {"greeting": "Hello, Ada!", "runtime": "java",
 * "pid": ...}}; {@code {"fail": "why"}} throws, which the runtime answers 500 HANDLER_ERROR.
 * {@code {"print": ["a"]}} prints each text on stdout, {@code {"log": ["b"]}} writes each through
 * {@link FunctionLog} (kept with the execution even when the instance serves several at once).
 */
public final class Hello implements FunctionHandler {

    private static final long PID = ProcessHandle.current().pid();

    @Override
    public Object handle(InvocationRequest request) {
        JsonNode input = request.input();
        if (!input.isNull() && !input.isObject()) {
            throw new IllegalArgumentException(
                    "input must be an object like {\"name\": \"Ada\"}, got " + input.getNodeType());
        }
        long sleep = input.path("sleepMs").asLong(0);
        if (sleep > 0) {
            try {
                Thread.sleep(Math.min(sleep, 60_000));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        for (JsonNode t : input.path("print")) {
            System.out.println(t.asText());
        }
        for (JsonNode t : input.path("log")) {
            FunctionLog.line(request, t.asText());
        }
        if (input.has("fail")) {
            throw new IllegalStateException("failing on purpose: " + input.get("fail").asText());
        }
        String name = input.path("name").asText("");
        if (name.isEmpty()) {
            name = "world";
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("greeting", "Hello, " + name + "!");
        out.put("runtime", "java");
        out.put("pid", PID);
        return out;
    }
}
