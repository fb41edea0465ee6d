package dev.nanofaas.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class CallbackClientTest {

    @Test
    void completionUriJoinsWithOneSlash() throws Exception {
        assertEquals(
                "http://h:1/v1/internal/executions/e1:complete",
                CallbackClient.completionUri("http://h:1/v1/internal/executions/", "e1").toString());
        assertEquals(
                "http://h:1/cb/e1:complete",
                CallbackClient.completionUri("http://h:1/cb", "e1").toString());
    }

    @Test
    void resultBodies() throws Exception {
        JsonNode ok = Json.MAPPER.readTree(InvocationResult.success(Map.of("a", List.of(1, 2))).toJson());
        assertEquals(Json.MAPPER.readTree("{\"success\":true,\"output\":{\"a\":[1,2]},\"error\":null}"), ok);
        JsonNode raw = Json.MAPPER.readTree(InvocationResult.successRawJson("[1,{\"b\":null}]").toJson());
        assertEquals(Json.MAPPER.readTree("{\"success\":true,\"output\":[1,{\"b\":null}],\"error\":null}"), raw);
        JsonNode nullOutput = Json.MAPPER.readTree(InvocationResult.success(null).toJson());
        assertTrue(nullOutput.get("output").isNull());
        JsonNode err = Json.MAPPER.readTree(InvocationResult.error("HANDLER_ERROR", "boom").toJson());
        assertEquals(
                Json.MAPPER.readTree(
                        "{\"success\":false,\"output\":null,\"error\":{\"code\":\"HANDLER_ERROR\",\"message\":\"boom\"}}"),
                err);
    }

    @Test
    void defaultTargetIsUsedAndAbsentTargetSendsNothing() throws Exception {
        CallbackClient none = new CallbackClient(null, 3, Duration.ofSeconds(1));
        assertNull(none.defaultTarget());
        assertFalse(none.sendResult("e1", InvocationResult.success(1), null));
        try (CallbackSink sink = new CallbackSink()) {
            CallbackClient client =
                    new CallbackClient(new CallbackClient.Target(sink.url(), "tok"), 3, Duration.ofSeconds(5));
            assertTrue(client.sendResult("e1", InvocationResult.success("out"), "tr"));
            CallbackSink.Received r = sink.awaitRequests(1, Duration.ofSeconds(10)).get(0);
            assertEquals("/v1/internal/executions/e1:complete", r.path());
            assertEquals("tok", r.header("X-Callback-Token"));
            assertEquals("tr", r.header("X-Trace-Id"));
            assertEquals("out", r.body().get("output").asText());
            assertNull(r.header("traceparent"));
            String tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            assertTrue(
                    client.sendResult(
                            client.defaultTarget(), "e2", InvocationResult.success(1), null, tp));
            CallbackSink.Received r2 = sink.awaitRequests(2, Duration.ofSeconds(10)).get(1);
            assertEquals("/v1/internal/executions/e2:complete", r2.path());
            assertEquals(tp, r2.header("traceparent"));
            assertNull(r2.header("X-Trace-Id"));
        }
    }

    @Test
    void sendResultReportsFailureInsteadOfThrowing() throws Exception {
        try (CallbackSink sink = new CallbackSink(100, 502)) {
            CallbackClient client =
                    new CallbackClient(
                            new CallbackClient.Target(sink.url(), null), 2, Duration.ofSeconds(5), Duration.ofMillis(1));
            assertFalse(client.sendResult("e1", InvocationResult.error("HANDLER_ERROR", "x"), null));
            assertEquals(2, sink.received().size());
        }
    }
}
