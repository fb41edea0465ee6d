package dev.nanofaas.function;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/**
 * One invocation as the handler sees it: the {@code input} of the JSON body
 * {@code {"input": ..., "metadata": {...}}}, its metadata, and the execution and trace ids the
 * invocation came with. JDK types only: read the input with your own JSON library from {@link
 * #inputJson()}, or as plain Java values from {@link #input()}.
 */
public final class Request {

    private final String inputJson;
    private final Map<String, String> metadata;
    private final String executionId;
    private final String traceId;
    private final String traceparent;
    private volatile Object input;
    private volatile boolean parsed;

    /**
     * A request; the runtime makes one per invocation, a handler's unit tests make their own.
     *
     * @param inputJson the input as JSON text ({@code null} means JSON {@code null})
     * @param metadata the metadata, may be {@code null}
     * @param executionId the execution id, may be {@code null}
     * @param traceId the trace id, may be {@code null}
     */
    public Request(
            String inputJson, Map<String, String> metadata, String executionId, String traceId) {
        this(inputJson, metadata, executionId, traceId, null);
    }

    /** With the W3C {@code traceparent} of the invocation ({@code null}: none). */
    public Request(
            String inputJson,
            Map<String, String> metadata,
            String executionId,
            String traceId,
            String traceparent) {
        this.inputJson = inputJson == null ? "null" : inputJson;
        this.metadata =
                metadata == null || metadata.isEmpty()
                        ? Map.of()
                        : Collections.unmodifiableMap(new LinkedHashMap<>(metadata));
        this.executionId = executionId;
        this.traceId = traceId;
        this.traceparent = traceparent;
    }

    /** A request with this input only (no metadata, no ids): for a handler's own tests. */
    public static Request of(String inputJson) {
        return new Request(inputJson, null, null, null);
    }

    /** The {@code input} field as JSON text; {@code "null"} when it was absent. */
    public String inputJson() {
        return inputJson;
    }

    /**
     * The input as plain Java values: {@code null}, {@link String}, {@link Boolean}, {@link Long}
     * or {@link java.math.BigInteger} (integers), {@link Double} (other numbers; {@link
     * java.math.BigDecimal} beyond a double's range), {@code Map<String, Object>} (keys in order) and {@code List<Object>}.
     * Parsed on first use.
     *
     * @throws IllegalArgumentException when the input is not valid JSON (never for what the
     *     runtime passes: it has checked the body)
     */
    public Object input() {
        if (!parsed) {
            synchronized (this) {
                if (!parsed) {
                    input = Json.parse(inputJson);
                    parsed = true;
                }
            }
        }
        return input;
    }

    /** The input as a JSON object ({@code Map}), or an empty map when it is absent or not one. */
    @SuppressWarnings("unchecked")
    public Map<String, Object> inputObject() {
        Object value = input();
        return value instanceof Map<?, ?> m ? (Map<String, Object>) m : Map.of();
    }

    /** The {@code metadata} field: never {@code null}, unmodifiable. */
    public Map<String, String> metadata() {
        return metadata;
    }

    /** The execution this invocation belongs to, or {@code null} when built by hand. */
    public String executionId() {
        return executionId;
    }

    /** The {@code X-Trace-Id} the invocation came with, or {@code null}. */
    public String traceId() {
        return traceId;
    }

    /**
     * The W3C {@code traceparent} the invocation came with (its parent is the platform's dispatch
     * span), or {@code null}: send it on outgoing calls to join the execution's trace.
     */
    public String traceparent() {
        return traceparent;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Request r
                && inputJson.equals(r.inputJson)
                && metadata.equals(r.metadata)
                && Objects.equals(executionId, r.executionId)
                && Objects.equals(traceId, r.traceId)
                && Objects.equals(traceparent, r.traceparent);
    }

    @Override
    public int hashCode() {
        return Objects.hash(inputJson, metadata, executionId, traceId, traceparent);
    }

    @Override
    public String toString() {
        return "Request{executionId="
                + executionId
                + ", traceId="
                + traceId
                + ", metadata="
                + metadata
                + ", input="
                + inputJson
                + "}";
    }
}
