package dev.nanofaas.function;

import java.util.Objects;

/**
 * An output that is already JSON text, e.g. written by the handler's own JSON library: the runtime
 * checks that it is one JSON value and answers it as is.
 */
public final class Response {

    private final String json;

    private Response(String json) {
        this.json = json;
    }

    /** The output {@code json}, one JSON value ({@code {"a":1}}, {@code [1,2]}, {@code "s"}, ...). */
    public static Response json(String json) {
        return new Response(Objects.requireNonNull(json, "json"));
    }

    /** The JSON text. */
    public String json() {
        return json;
    }

    @Override
    public String toString() {
        return "Response.json(" + json + ")";
    }
}
