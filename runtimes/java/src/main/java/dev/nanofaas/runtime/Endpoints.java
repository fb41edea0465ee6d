package dev.nanofaas.runtime;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.Headers;
import com.sun.net.httpserver.HttpExchange;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The runtime contract's two routes, {@code GET /health} and {@code POST /invoke}.
 *
 * <p>An invocation: resolve the execution id (header, else {@code EXECUTION_ID}), the callback
 * target (header, else environment) and the trace id; parse {@code {"input", "metadata"}}; call the
 * handler; answer 200 with its output as JSON, or 500 {@code {"error": {"code", "message"}}}; then,
 * off the request path, post the outcome to the callback URL when one is known.
 *
 * <p>Client mistakes answer 4xx {@code {"error": "<what is wrong>"}} before the handler runs.
 */
final class Endpoints implements RuntimeServer.Routes {

    static final String EXECUTION_ID_HEADER = "X-Execution-Id";
    static final String TRACE_ID_HEADER = "X-Trace-Id";
    static final String TRACEPARENT_HEADER = "traceparent";
    static final String CALLBACK_URL_HEADER = "X-Callback-Url";
    static final String CALLBACK_TOKEN_HEADER = "X-Callback-Token";

    static final String HANDLER_ERROR = "HANDLER_ERROR";
    static final String FUNCTION_ERROR = "FUNCTION_ERROR";
    static final String SHUTTING_DOWN = "SHUTTING_DOWN";
    static final String INTERNAL = "INTERNAL";

    private static final byte[] HEALTH_OK = "{\"status\":\"ok\"}".getBytes(StandardCharsets.UTF_8);

    private final RuntimeConfig config;
    private final FunctionHandler handler;
    private final CallbackClient callbacks;
    private final Executor callbackExecutor;
    private final InFlight inFlight;
    private final Log.Limiter handlerErrorLog = new Log.Limiter(10, 60_000);
    private final Log.Limiter callbackDropLog = new Log.Limiter(10, 60_000);
    private final AtomicLong requestsSeen = new AtomicLong();

    Endpoints(
            RuntimeConfig config,
            FunctionHandler handler,
            CallbackClient callbacks,
            Executor callbackExecutor,
            InFlight inFlight) {
        this.config = config;
        this.handler = handler;
        this.callbacks = callbacks;
        this.callbackExecutor = callbackExecutor;
        this.inFlight = inFlight;
    }

    /** Requests that reached this handler so far; shutdown watches it to see when all is quiet. */
    public long requestsSeen() {
        return requestsSeen.get();
    }

    @Override
    public void handle(HttpExchange exchange) {
        requestsSeen.incrementAndGet();
        try {
            String path = exchange.getRequestURI().getRawPath();
            String method = exchange.getRequestMethod();
            if ("/invoke".equals(path)) {
                if ("POST".equals(method)) {
                    invoke(exchange);
                } else {
                    methodNotAllowed(exchange, "POST");
                }
            } else if ("/health".equals(path)) {
                if ("GET".equals(method) || "HEAD".equals(method)) {
                    respond(exchange, 200, HEALTH_OK);
                } else {
                    methodNotAllowed(exchange, "GET, HEAD");
                }
            } else {
                respond(
                        exchange,
                        404,
                        simpleError("no route " + path + " (routes: GET /health, POST /invoke)"));
            }
        } catch (IOException e) {
            // The client went away while we answered: nothing left to tell it.
            Log.debug("connection error: " + e);
        } catch (RuntimeException | Error e) {
            Log.warn("unexpected failure serving " + exchange.getRequestURI(), e);
            try {
                respond(exchange, 500, errorBody(INTERNAL, HandlerLoader.describe(e)));
            } catch (IOException | RuntimeException ignored) {
                // Headers may already be sent; the connection is closed below.
            }
        } finally {
            exchange.close();
        }
    }

    /** What to answer, and the callback to queue (null: none) before answering. */
    private record Outcome(int status, byte[] body, Runnable callback) {
        static Outcome reject(int status, byte[] body) {
            return new Outcome(status, body, null);
        }
    }

    private void invoke(HttpExchange exchange) throws IOException {
        if (!inFlight.enter()) {
            respond(exchange, 503, errorBody(SHUTTING_DOWN, "the runtime is shutting down"));
            return;
        }
        try {
            Outcome outcome = run(exchange);
            // Queued before answering, so that once the caller has its answer the callback is
            // already on its way (and shutdown, which waits for in-flight invocations, sends it).
            if (outcome.callback() != null) {
                try {
                    callbackExecutor.execute(outcome.callback());
                } catch (RejectedExecutionException e) {
                    callbackDropLog.warn(
                            () -> "callback dropped: the callback queue is full or closed");
                }
            }
            respond(exchange, outcome.status(), outcome.body());
        } finally {
            inFlight.exit();
        }
    }

    /** Serves one invocation up to, not including, the answer. */
    private Outcome run(HttpExchange exchange) throws IOException {
        Headers headers = exchange.getRequestHeaders();
        String executionId = header(headers, EXECUTION_ID_HEADER);
        if (executionId == null) {
            executionId = config.defaultExecutionId();
        } else {
            String problem = RuntimeConfig.checkExecutionId(executionId);
            if (problem != null) {
                return Outcome.reject(
                        400, simpleError("invalid " + EXECUTION_ID_HEADER + ": " + problem));
            }
        }
        if (executionId == null) {
            return Outcome.reject(
                    400,
                    simpleError(
                            "no execution id: send the "
                                    + EXECUTION_ID_HEADER
                                    + " header or set EXECUTION_ID"));
        }
        String traceId = header(headers, TRACE_ID_HEADER);
        String traceparent = traceparent(header(headers, TRACEPARENT_HEADER));
        String callbackUrl = header(headers, CALLBACK_URL_HEADER);
        if (callbackUrl != null) {
            String problem = CallbackClient.checkCallbackUrl(callbackUrl);
            if (problem != null) {
                return Outcome.reject(
                        400, simpleError("invalid " + CALLBACK_URL_HEADER + ": " + problem));
            }
        } else {
            callbackUrl = config.defaultCallbackUrl();
        }
        String token = header(headers, CALLBACK_TOKEN_HEADER);
        if (token == null) {
            token = config.defaultCallbackToken();
        }
        CallbackClient.Target target =
                callbackUrl == null ? null : new CallbackClient.Target(callbackUrl, token);

        byte[] body = readBody(exchange);
        if (body == null) {
            String limit = "MAX_BODY_BYTES=" + config.maxBodyBytes();
            return Outcome.reject(413, simpleError("request body larger than " + limit));
        }
        InvocationRequest request;
        try {
            request = parse(body, executionId, traceId, traceparent);
        } catch (BadRequest e) {
            return Outcome.reject(400, simpleError(e.getMessage()));
        }

        Object output;
        try {
            output = handler.handle(request);
        } catch (ApiHandler.OutputNotJson e) {
            return failure(FUNCTION_ERROR, e.getMessage(), target, executionId, traceId, traceparent);
        } catch (Throwable t) {
            String message = message(t);
            String id = executionId;
            handlerErrorLog.warn(() -> "handler failed for execution " + id + ": " + message, t);
            return failure(HANDLER_ERROR, message, target, executionId, traceId, traceparent);
        }
        byte[] json;
        try {
            json = Json.MAPPER.writeValueAsBytes(output);
        } catch (JsonProcessingException | RuntimeException | StackOverflowError e) {
            String message =
                    "the handler's output ("
                            + output.getClass().getName()
                            + ") cannot be serialised as JSON: "
                            + HandlerLoader.describe(e);
            return failure(FUNCTION_ERROR, message, target, executionId, traceId, traceparent);
        }
        InvocationResult result =
                target == null
                        ? null
                        : InvocationResult.successRawJson(new String(json, StandardCharsets.UTF_8));
        return new Outcome(200, json, callbackFor(target, executionId, result, traceId, traceparent));
    }

    private Outcome failure(
            String code,
            String message,
            CallbackClient.Target target,
            String executionId,
            String traceId,
            String traceparent) {
        InvocationResult result = InvocationResult.error(code, message);
        return new Outcome(
                500,
                errorBody(code, message),
                callbackFor(target, executionId, result, traceId, traceparent));
    }

    private Runnable callbackFor(
            CallbackClient.Target target,
            String executionId,
            InvocationResult result,
            String traceId,
            String traceparent) {
        if (target == null) {
            return null;
        }
        return () -> callbacks.sendResult(target, executionId, result, traceId, traceparent);
    }

    /**
     * A W3C {@code traceparent} as received, or {@code null} when absent or malformed (then the
     * invocation has no parent, as the W3C rules say: it is not an error of the call).
     */
    static String traceparent(String value) {
        if (value == null || value.length() < 55 || value.length() > 512) {
            return null;
        }
        // version "-" trace-id "-" parent-id "-" flags, lowercase hex; later versions may add
        // "-..." fields after these.
        if (value.charAt(2) != '-' || value.charAt(35) != '-' || value.charAt(52) != '-') {
            return null;
        }
        if (value.length() > 55 && value.charAt(55) != '-') {
            return null;
        }
        if (value.startsWith("ff") || (value.startsWith("00") && value.length() != 55)) {
            return null;
        }
        boolean traceNonZero = false;
        boolean parentNonZero = false;
        for (int i = 0; i < value.length(); i++) {
            char c = value.charAt(i);
            if (i >= 55) {
                if (c < 0x21 || c > 0x7e) {
                    return null;
                }
                continue;
            }
            if (i == 2 || i == 35 || i == 52) {
                continue;
            }
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
                return null;
            }
            if (c != '0' && i > 2 && i < 35) {
                traceNonZero = true;
            }
            if (c != '0' && i > 35 && i < 52) {
                parentNonZero = true;
            }
        }
        return traceNonZero && parentNonZero ? value : null;
    }

    /** The body, or null when it is larger than MAX_BODY_BYTES. */
    private byte[] readBody(HttpExchange exchange) throws IOException {
        int max = config.maxBodyBytes();
        try (InputStream in = exchange.getRequestBody()) {
            byte[] body = in.readNBytes(max);
            if (body.length == max && in.read() != -1) {
                return null;
            }
            return body;
        }
    }

    /** {@code {"input": any, "metadata": {string: string}}}; an empty body is {@code {}}. */
    static InvocationRequest parse(byte[] body, String executionId, String traceId)
            throws BadRequest {
        return parse(body, executionId, traceId, null);
    }

    static InvocationRequest parse(
            byte[] body, String executionId, String traceId, String traceparent)
            throws BadRequest {
        JsonNode root;
        if (isBlank(body)) {
            root = JsonNodeFactory.instance.objectNode();
        } else {
            try {
                root = Json.MAPPER.readTree(body);
            } catch (IOException e) {
                throw new BadRequest("invalid JSON body: " + firstLine(e.getMessage()));
            } catch (StackOverflowError e) {
                throw new BadRequest("invalid JSON body: nested too deeply");
            }
        }
        if (!root.isObject()) {
            throw new BadRequest(
                    "the body must be a JSON object {\"input\": ..., \"metadata\": {...}}, got "
                            + typeName(root));
        }
        ObjectNode object = (ObjectNode) root;
        JsonNode metadataNode = object.get("metadata");
        Map<String, String> metadata = Map.of();
        if (metadataNode != null && !metadataNode.isNull()) {
            if (!metadataNode.isObject()) {
                throw new BadRequest("\"metadata\" must be an object of strings");
            }
            metadata = new LinkedHashMap<>();
            for (Iterator<Map.Entry<String, JsonNode>> it = metadataNode.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> field = it.next();
                if (!field.getValue().isTextual()) {
                    throw new BadRequest(
                            "\"metadata\" must be an object of strings; metadata."
                                    + field.getKey()
                                    + " is "
                                    + typeName(field.getValue()));
                }
                metadata.put(field.getKey(), field.getValue().textValue());
            }
        }
        return new InvocationRequest(
                object.get("input"), metadata, executionId, traceId, traceparent);
    }

    /** A client mistake in the request body. */
    static final class BadRequest extends Exception {
        private static final long serialVersionUID = 1L;

        BadRequest(String message) {
            super(message, null, false, false);
        }
    }

    /** "object", "array", "string", "number", ... */
    private static String typeName(JsonNode node) {
        return node.getNodeType().toString().toLowerCase(Locale.ROOT);
    }

    private static boolean isBlank(byte[] body) {
        for (byte b : body) {
            if (b != ' ' && b != '\n' && b != '\r' && b != '\t') {
                return false;
            }
        }
        return true;
    }

    private static String firstLine(String s) {
        if (s == null) {
            return "unreadable";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    /** A handler failure's message: the exception's own, else its class name. */
    static String message(Throwable t) {
        String m = t.getMessage();
        return m == null || m.isBlank() ? t.getClass().getName() : m;
    }

    private static String header(Headers headers, String name) {
        String v = headers.getFirst(name);
        return v == null || v.isBlank() ? null : v.trim();
    }

    private static void methodNotAllowed(HttpExchange exchange, String allow) throws IOException {
        exchange.getResponseHeaders().set("Allow", allow);
        respond(
                exchange,
                405,
                simpleError(
                        exchange.getRequestMethod()
                                + " is not allowed on "
                                + exchange.getRequestURI().getRawPath()
                                + " (allowed: "
                                + allow
                                + ")"));
    }

    /** {@code {"error": "<message>"}}: the seed's shape for client mistakes. */
    static byte[] simpleError(String message) {
        ObjectNode node = JsonNodeFactory.instance.objectNode();
        node.put("error", message);
        return toBytes(node);
    }

    /** {@code {"error": {"code": "...", "message": "..."}}}. */
    static byte[] errorBody(String code, String message) {
        ObjectNode node = JsonNodeFactory.instance.objectNode();
        ObjectNode error = node.putObject("error");
        error.put("code", code);
        error.put("message", message);
        return toBytes(node);
    }

    private static byte[] toBytes(JsonNode node) {
        try {
            return Json.MAPPER.writeValueAsBytes(node);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("a tree of strings always serialises", e);
        }
    }

    static void respond(HttpExchange exchange, int status, byte[] body) throws IOException {
        exchange.getResponseHeaders().set("Content-Type", "application/json");
        if ("HEAD".equals(exchange.getRequestMethod())) {
            exchange.sendResponseHeaders(status, -1);
            return;
        }
        exchange.sendResponseHeaders(status, body.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(body);
        }
    }
}
