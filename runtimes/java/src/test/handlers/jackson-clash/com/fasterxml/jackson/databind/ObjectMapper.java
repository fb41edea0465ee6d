package com.fasterxml.jackson.databind;

import java.util.Map;
import java.util.stream.Collectors;

/**
 * A stand-in for another Jackson version bundled by a handler: the same class name as the
 * runtime's Jackson, a different API. If the runtime's class were loaded instead of this one, the
 * handler's calls to {@link #VERSION} and {@link #writeFlat} would fail with NoSuchFieldError /
 * NoSuchMethodError.
 */
public final class ObjectMapper {

    public static final String VERSION = "9.9.9-bundled-by-the-handler";

    /** A flat map of strings as a JSON object (enough for the test). */
    public String writeFlat(Map<String, String> map) {
        return map.entrySet().stream()
                .map(e -> quote(e.getKey()) + ":" + quote(e.getValue()))
                .collect(Collectors.joining(",", "{", "}"));
    }

    private static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }
}
