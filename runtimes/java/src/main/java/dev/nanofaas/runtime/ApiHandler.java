package dev.nanofaas.runtime;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import dev.nanofaas.function.Request;
import dev.nanofaas.function.Response;

/**
 * A handler written against the function API ({@code dev.nanofaas.function.FunctionHandler}),
 * adapted to the runtime's request path: the input goes in as JSON text (the handler reads it with
 * whatever it likes), a {@link Response}'s JSON text is checked and answered as is, any other
 * output is serialised by the runtime. The call runs with the handler's class loader as the
 * thread's context class loader, so libraries that look classes up there find the handler's own.
 */
final class ApiHandler implements FunctionHandler {

    /** The handler's {@link Response} is not one JSON value: answered as {@code FUNCTION_ERROR}. */
    static final class OutputNotJson extends Exception {
        private static final long serialVersionUID = 1L;

        OutputNotJson(String message) {
            super(message);
        }
    }

    private final dev.nanofaas.function.FunctionHandler target;
    private final ClassLoader loader;

    ApiHandler(dev.nanofaas.function.FunctionHandler target, ClassLoader loader) {
        this.target = target;
        this.loader = loader;
    }

    /** The handler's own class, for the logs. */
    Class<?> targetClass() {
        return target.getClass();
    }

    @Override
    public Object handle(InvocationRequest request) throws Exception {
        Request req =
                new Request(
                        request.input().toString(),
                        request.metadata(),
                        request.executionId(),
                        request.traceId(),
                        request.traceparent());
        Thread thread = Thread.currentThread();
        ClassLoader previous = thread.getContextClassLoader();
        thread.setContextClassLoader(loader);
        Object out;
        try {
            out = target.handle(req);
        } finally {
            thread.setContextClassLoader(previous);
        }
        if (out instanceof Response response) {
            JsonNode node;
            try {
                node = Json.MAPPER.readTree(response.json());
            } catch (JsonProcessingException | StackOverflowError e) {
                throw new OutputNotJson(
                        "the handler's Response.json(...) is not one JSON value: "
                                + HandlerLoader.describe(e));
            }
            if (node == null || node.isMissingNode()) {
                throw new OutputNotJson("the handler's Response.json(...) is empty");
            }
            return node;
        }
        return out;
    }
}
