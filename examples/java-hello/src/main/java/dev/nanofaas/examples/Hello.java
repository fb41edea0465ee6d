package dev.nanofaas.examples;

import dev.nanofaas.function.FunctionHandler;
import dev.nanofaas.function.FunctionLog;
import dev.nanofaas.function.Request;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * hello-java: {@code {"name": "Ada"}} answers {@code {"greeting": "Hello, Ada!", "runtime": "java",
 * "pid": ...}}; {@code {"fail": "why"}} throws, which the runtime answers 500 HANDLER_ERROR.
 * {@code {"print": ["a"]}} prints each text on stdout, {@code {"log": ["b"]}} writes each through
 * {@link FunctionLog} (kept with the execution even when the instance serves several at once);
 * {@code {"sleepMs": n}} sleeps first (at most a minute); {@code {"trace": true}} adds the W3C
 * {@code traceparent} the invocation came with to the answer.
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
        if (in.get("sleepMs") instanceof Number n && n.longValue() > 0) {
            try {
                Thread.sleep(Math.min(n.longValue(), 60_000));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        if (in.get("print") instanceof List<?> lines) {
            for (Object t : lines) {
                System.out.println(t);
            }
        }
        if (in.get("log") instanceof List<?> lines) {
            for (Object t : lines) {
                FunctionLog.line(request, String.valueOf(t));
            }
        }
        if (in.containsKey("fail")) {
            throw new IllegalStateException("failing on purpose: " + in.get("fail"));
        }
        Object given = in.get("name");
        String name = given instanceof String s && !s.isEmpty() ? s : "world";
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("greeting", "Hello, " + name + "!");
        out.put("runtime", "java");
        out.put("pid", PID);
        if (Boolean.TRUE.equals(in.get("trace"))) {
            out.put("traceparent", request.traceparent());
        }
        return out;
    }
}
