package dev.nanofaas.runtime;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.util.RawValue;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.util.Objects;

/**
 * The outcome of one invocation as posted to the callback URL:
 * {@code {"success": bool, "output": ..., "error": {"code", "message"} | null}}.
 */
public final class InvocationResult {

    /** {@code {"code": "...", "message": "..."}}. */
    public record ErrorInfo(String code, String message) {
        public ErrorInfo {
            Objects.requireNonNull(code, "code");
            message = message == null ? "" : message;
        }
    }

    private final boolean success;
    private final Object output;
    private final ErrorInfo error;

    private InvocationResult(boolean success, Object output, ErrorInfo error) {
        this.success = success;
        this.output = output;
        this.error = error;
    }

    /** A success carrying {@code output} (any value Jackson can serialise). */
    public static InvocationResult success(Object output) {
        return new InvocationResult(true, output, null);
    }

    /** A success whose output is already serialised JSON text, embedded as is. */
    static InvocationResult successRawJson(String json) {
        return new InvocationResult(true, new RawValue(json), null);
    }

    /** A failure with an error code such as {@code HANDLER_ERROR} and a message. */
    public static InvocationResult error(String code, String message) {
        return new InvocationResult(false, null, new ErrorInfo(code, message));
    }

    public boolean isSuccess() {
        return success;
    }

    /** The output of a success, {@code null} for a failure. */
    public Object output() {
        return output;
    }

    /** The error of a failure, {@code null} for a success. */
    public ErrorInfo error() {
        return error;
    }

    /** The callback body. */
    byte[] toJson() throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(128);
        try (JsonGenerator g = Json.MAPPER.getFactory().createGenerator(bytes)) {
            g.writeStartObject();
            g.writeBooleanField("success", success);
            g.writeFieldName("output");
            if (output == null) {
                g.writeNull();
            } else {
                Json.MAPPER.writeValue(g, output);
            }
            if (error == null) {
                g.writeNullField("error");
            } else {
                g.writeObjectFieldStart("error");
                g.writeStringField("code", error.code());
                g.writeStringField("message", error.message());
                g.writeEndObject();
            }
            g.writeEndObject();
        }
        return bytes.toByteArray();
    }

    @Override
    public String toString() {
        return success ? "success(" + output + ")" : "error(" + error + ")";
    }
}
