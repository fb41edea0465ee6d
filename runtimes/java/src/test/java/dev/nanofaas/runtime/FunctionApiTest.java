package dev.nanofaas.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.nanofaas.function.Request;
import dev.nanofaas.function.Response;
import java.math.BigInteger;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The function API's own types, and the runtime's adapter of a handler written against them. */
class FunctionApiTest {

    @Test
    void requestParsesItsInputIntoPlainJavaValues() {
        Request r =
                Request.of(
                        "{\"s\":\"a\\\"b\\u00e9\",\"i\":42,\"big\":123456789012345678901234567890,"
                                + "\"d\":1.5,\"e\":1e3,\"t\":true,\"n\":null,\"l\":[1,[]],\"o\":{}}");
        Map<String, Object> in = r.inputObject();
        assertEquals("a\"b\u00e9", in.get("s"));
        assertEquals(42L, in.get("i"));
        assertEquals(new BigInteger("123456789012345678901234567890"), in.get("big"));
        assertEquals(1.5, in.get("d"));
        assertEquals(1000.0, in.get("e"));
        assertEquals(Boolean.TRUE, in.get("t"));
        assertTrue(in.containsKey("n"));
        assertNull(in.get("n"));
        assertEquals(List.of(1L, List.of()), in.get("l"));
        assertEquals(Map.of(), in.get("o"));
        assertEquals(List.of("s", "i", "big", "d", "e", "t", "n", "l", "o"), List.copyOf(in.keySet()));
        assertNull(Request.of(null).input());
        assertEquals("null", Request.of(null).inputJson());
        assertEquals(Map.of(), Request.of("[1]").inputObject());
    }

    @Test
    void requestRejectsInvalidJson() {
        for (String bad : List.of("", "{", "[1,]", "01", "1.", "\"x", "tru", "{\"a\" 1}", "1 2", "\"\\x\"")) {
            IllegalArgumentException e =
                    assertThrows(IllegalArgumentException.class, () -> Request.of(bad).input(), bad);
            assertTrue(e.getMessage().startsWith("invalid JSON at offset "), e.getMessage());
        }
        assertThrows(IllegalArgumentException.class, () -> Request.of("[".repeat(5000)).input());
    }

    @Test
    void theAdapterPassesTheInputAsJsonTextAndChecksAResponse() throws Exception {
        JsonNode input = Json.MAPPER.readTree("{\"name\":\"Ada\",\"n\":[1,2]}");
        String tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        InvocationRequest req = new InvocationRequest(input, Map.of("k", "v"), "e1", "t1", tp);
        Request[] seen = new Request[1];
        ApiHandler echo =
                new ApiHandler(
                        r -> {
                            seen[0] = r;
                            return Map.of("ok", true);
                        },
                        getClass().getClassLoader());
        assertEquals(Map.of("ok", true), echo.handle(req));
        assertEquals("{\"name\":\"Ada\",\"n\":[1,2]}", seen[0].inputJson());
        assertEquals(Map.of("k", "v"), seen[0].metadata());
        assertEquals("e1", seen[0].executionId());
        assertEquals("t1", seen[0].traceId());
        assertEquals(tp, seen[0].traceparent());
        assertNull(Request.of("1").traceparent());

        ApiHandler raw = new ApiHandler(r -> Response.json("{\"a\": [1, 2]}"), getClass().getClassLoader());
        assertEquals(Json.MAPPER.readTree("{\"a\":[1,2]}"), raw.handle(req));
        for (String bad : List.of("{", "", "1 2")) {
            ApiHandler b = new ApiHandler(r -> Response.json(bad), getClass().getClassLoader());
            assertThrows(ApiHandler.OutputNotJson.class, () -> b.handle(req), bad);
        }
    }
}
