package dev.nanofaas.runtime;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.NullNode;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * One invocation as the handler sees it: the JSON body {@code {"input": ..., "metadata": {...}}}
 * plus the execution and trace ids the invocation came with.
 */
public final class InvocationRequest {

    private final JsonNode input;
    private final Map<String, String> metadata;
    private final String executionId;
    private final String traceId;
    private final String traceparent;

    /** A request with no execution or trace id, e.g. for a handler's own unit tests. */
    public InvocationRequest(JsonNode input, Map<String, String> metadata) {
        this(input, metadata, null, null);
    }

    public InvocationRequest(
            JsonNode input, Map<String, String> metadata, String executionId, String traceId) {
        this(input, metadata, executionId, traceId, null);
    }

    /** With the W3C {@code traceparent} the invocation came with ({@code null}: none). */
    public InvocationRequest(
            JsonNode input,
            Map<String, String> metadata,
            String executionId,
            String traceId,
            String traceparent) {
        this.input = input == null ? NullNode.getInstance() : input;
        this.metadata =
                metadata == null || metadata.isEmpty()
                        ? Map.of()
                        : Collections.unmodifiableMap(new LinkedHashMap<>(metadata));
        this.executionId = executionId;
        this.traceId = traceId;
        this.traceparent = traceparent;
    }

    /** The {@code input} field; a {@code NullNode} (never {@code null}) when it was absent. */
    public JsonNode input() {
        return input;
    }

    /** The input bound to {@code type} with Jackson (records, POJOs, maps, lists...). */
    public <T> T inputAs(Class<T> type) throws JsonProcessingException {
        return Json.MAPPER.treeToValue(input, type);
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
    public String toString() {
        return "InvocationRequest{executionId="
                + executionId
                + ", traceId="
                + traceId
                + ", metadata="
                + metadata
                + ", input="
                + input
                + "}";
    }
}
