package dev.nanofaas.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.nanofaas.runtime.fixtures.EchoHandler;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** The runtime contract of {@code GET /health} and {@code POST /invoke}, over real HTTP. */
class InvokeEndpointTest {

    private static final Duration WAIT = Duration.ofSeconds(10);
    private static final String BODY = "{\"input\": \"test\", \"metadata\": {}}";

    /** Records every callback the runtime asks for, without sending anything. */
    static final class RecordingCallbacks extends CallbackClient {
        record Call(
                Target target,
                String executionId,
                InvocationResult result,
                String traceId,
                String traceparent) {}

        final List<Call> calls = Collections.synchronizedList(new ArrayList<>());

        RecordingCallbacks() {
            super(null, 1, Duration.ofSeconds(1));
        }

        @Override
        public boolean sendResult(
                Target target,
                String executionId,
                InvocationResult result,
                String traceId,
                String traceparent) {
            calls.add(new Call(target, executionId, result, traceId, traceparent));
            return true;
        }
    }

    @Test
    void healthAnswersOk() throws Exception {
        try (TestRuntime rt = TestRuntime.start(Map.of(), new EchoHandler())) {
            TestRuntime.Response r = rt.send("GET", "/health", null);
            assertEquals(200, r.status());
            assertEquals("ok", r.json().get("status").asText());
            assertEquals("application/json", r.header("Content-Type"));
        }
    }

    @Test
    void invokeUsesExecutionIdFromHeader() throws Exception {
        try (CallbackSink sink = new CallbackSink();
                TestRuntime rt =
                        TestRuntime.start(
                                Map.of("CALLBACK_URL", sink.url(), "EXECUTION_ID", "env-exec-1"),
                                new EchoHandler())) {
            TestRuntime.Response r = rt.invoke(BODY, "X-Execution-Id", "header-exec-123");
            assertEquals(200, r.status());
            assertEquals("header-exec-123", r.json().get("executionId").asText());
            CallbackSink.Received cb = sink.awaitRequests(1, WAIT).get(0);
            assertEquals("POST", cb.method());
            assertEquals("/v1/internal/executions/header-exec-123:complete", cb.path());
            assertTrue(cb.body().get("success").asBoolean());
        }
    }

    @Test
    void invokePropagatesTraceIdToCallback() throws Exception {
        try (CallbackSink sink = new CallbackSink();
                TestRuntime rt =
                        TestRuntime.start(Map.of("CALLBACK_URL", sink.url()), new EchoHandler())) {
            TestRuntime.Response r =
                    rt.invoke(BODY, "X-Execution-Id", "exec-123", "X-Trace-Id", "trace-456");
            assertEquals(200, r.status());
            assertEquals("trace-456", r.json().get("traceId").asText());
            CallbackSink.Received cb = sink.awaitRequests(1, WAIT).get(0);
            assertEquals("/v1/internal/executions/exec-123:complete", cb.path());
            assertEquals("trace-456", cb.header("X-Trace-Id"));
        }
    }

    @Test
    void traceparentReachesTheHandlerAndTheCallback() throws Exception {
        String tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        try (CallbackSink sink = new CallbackSink();
                TestRuntime rt =
                        TestRuntime.start(Map.of("CALLBACK_URL", sink.url()), new EchoHandler())) {
            TestRuntime.Response r = rt.invoke(BODY, "X-Execution-Id", "e-tp", "traceparent", tp);
            assertEquals(200, r.status());
            assertEquals(tp, r.json().get("traceparent").asText());
            CallbackSink.Received cb = sink.awaitRequests(1, WAIT).get(0);
            assertEquals("/v1/internal/executions/e-tp:complete", cb.path());
            assertEquals(tp, cb.header("traceparent"));
            // A failing handler's callback carries it too.
            TestRuntime.Response f =
                    rt.invoke(
                            "{\"input\": {\"fail\": \"x\"}}",
                            "X-Execution-Id",
                            "e-tp2",
                            "traceparent",
                            tp);
            assertEquals(500, f.status());
            assertEquals(tp, sink.awaitRequests(2, WAIT).get(1).header("traceparent"));
        }
    }

    @Test
    void aMalformedTraceparentIsDropped() throws Exception {
        String tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for (String bad :
                List.of(
                        tp.toUpperCase(java.util.Locale.ROOT),
                        tp + "-",
                        "ff" + tp.substring(2),
                        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                        tp.substring(1),
                        "garbage")) {
            assertNull(Endpoints.traceparent(bad), bad);
        }
        assertEquals(tp, Endpoints.traceparent(tp));
        // A later version may carry more fields.
        String v1 = "01" + tp.substring(2) + "-extra";
        assertEquals(v1, Endpoints.traceparent(v1));
        try (CallbackSink sink = new CallbackSink();
                TestRuntime rt =
                        TestRuntime.start(Map.of("CALLBACK_URL", sink.url()), new EchoHandler())) {
            TestRuntime.Response r =
                    rt.invoke(BODY, "X-Execution-Id", "e-bad", "traceparent", tp + "-");
            assertEquals(200, r.status());
            assertTrue(r.json().get("traceparent").isNull(), r.json().toString());
            assertNull(sink.awaitRequests(1, WAIT).get(0).header("traceparent"));
        }
    }

    @Test
    void noTraceHeaderWithoutTraceId() throws Exception {
        try (CallbackSink sink = new CallbackSink();
                TestRuntime rt =
                        TestRuntime.start(Map.of("CALLBACK_URL", sink.url()), new EchoHandler())) {
            assertEquals(200, rt.invoke(BODY, "X-Execution-Id", "e1").status());
            CallbackSink.Received cb = sink.awaitRequests(1, WAIT).get(0);
            assertNull(cb.header("X-Trace-Id"));
            assertNull(cb.header("X-Callback-Token"));
        }
    }

    @Test
    void successCallbackCarriesOutputAndNullError() throws Exception {
        try (CallbackSink sink = new CallbackSink();
                TestRuntime rt =
                        TestRuntime.start(Map.of("CALLBACK_URL", sink.url() + "/"), new EchoHandler())) {
            TestRuntime.Response r =
                    rt.invoke(
                            "{\"input\": {\"n\": [1, 2.5, \"x\"]}, \"metadata\": {\"k\": \"v\"}}",
                            "X-Execution-Id",
                            "e-ok");
            assertEquals(200, r.status());
            assertEquals("application/json", r.header("Content-Type"));
            assertEquals(Json.MAPPER.readTree("{\"n\": [1, 2.5, \"x\"]}"), r.json().get("echo"));
            assertEquals("v", r.json().get("metadata").get("k").asText());
            CallbackSink.Received cb = sink.awaitRequests(1, WAIT).get(0);
            // A trailing slash on the callback URL does not double the separator.
            assertEquals("/v1/internal/executions/e-ok:complete", cb.path());
            assertEquals("application/json", cb.header("Content-Type"));
            JsonNode body = cb.body();
            assertTrue(body.get("success").asBoolean());
            assertEquals(r.json(), body.get("output"), "the callback carries the same output");
            assertTrue(body.has("error") && body.get("error").isNull());
        }
    }

    @Test
    void executionIdFallsBackToEnvironment() throws Exception {
        try (CallbackSink sink = new CallbackSink();
                TestRuntime rt =
                        TestRuntime.start(
                                Map.of("CALLBACK_URL", sink.url(), "EXECUTION_ID", "env-exec-7"),
                                new EchoHandler())) {
            TestRuntime.Response r = rt.invoke(BODY);
            assertEquals(200, r.status());
            assertEquals("env-exec-7", r.json().get("executionId").asText());
            assertEquals(
                    "/v1/internal/executions/env-exec-7:complete",
                    sink.awaitRequests(1, WAIT).get(0).path());
        }
    }

    @Test
    void noExecutionIdIs400AndTheHandlerDoesNotRun() throws Exception {
        AtomicInteger calls = new AtomicInteger();
        RecordingCallbacks callbacks = new RecordingCallbacks();
        try (TestRuntime rt =
                TestRuntime.start(
                        Map.of("CALLBACK_URL", "http://127.0.0.1:9/cb"),
                        request -> calls.incrementAndGet(),
                        callbacks)) {
            TestRuntime.Response r = rt.invoke(BODY);
            assertEquals(400, r.status());
            assertTrue(r.json().get("error").isTextual(), "error is a message string: " + r.json());
            assertTrue(r.json().get("error").asText().contains("X-Execution-Id"));
            assertEquals(0, calls.get());
            rt.awaitCallbacks();
            assertEquals(List.of(), callbacks.calls);
        }
    }

    @Test
    void handlerErrorIs500AndCallbackReportsFailure() throws Exception {
        try (CallbackSink sink = new CallbackSink();
                TestRuntime rt =
                        TestRuntime.start(Map.of("CALLBACK_URL", sink.url()), new EchoHandler())) {
            TestRuntime.Response r =
                    rt.invoke("{\"input\": {\"fail\": \"boom\"}}", "X-Execution-Id", "e-fail", "X-Trace-Id", "t-9");
            assertEquals(500, r.status());
            assertEquals("HANDLER_ERROR", r.json().get("error").get("code").asText());
            assertEquals("boom", r.json().get("error").get("message").asText());
            CallbackSink.Received cb = sink.awaitRequests(1, WAIT).get(0);
            assertEquals("/v1/internal/executions/e-fail:complete", cb.path());
            assertEquals("t-9", cb.header("X-Trace-Id"));
            assertFalse(cb.body().get("success").asBoolean());
            assertTrue(cb.body().get("output").isNull());
            assertEquals("HANDLER_ERROR", cb.body().get("error").get("code").asText());
            assertEquals("boom", cb.body().get("error").get("message").asText());
        }
    }

    @Test
    void handlerErrorWithoutMessageNamesTheException() throws Exception {
        try (TestRuntime rt =
                TestRuntime.start(Map.of(), request -> {
                    throw new UnsupportedOperationException();
                })) {
            TestRuntime.Response r = rt.invoke(BODY, "X-Execution-Id", "e1");
            assertEquals(500, r.status());
            assertEquals(
                    "java.lang.UnsupportedOperationException",
                    r.json().get("error").get("message").asText());
        }
    }

    @Test
    void unserialisableOutputIs500FunctionError() throws Exception {
        RecordingCallbacks callbacks = new RecordingCallbacks();
        try (TestRuntime rt =
                TestRuntime.start(
                        Map.of("CALLBACK_URL", "http://127.0.0.1:9/cb"),
                        request -> new Object(),
                        callbacks)) {
            TestRuntime.Response r = rt.invoke(BODY, "X-Execution-Id", "e1");
            assertEquals(500, r.status());
            assertEquals("FUNCTION_ERROR", r.json().get("error").get("code").asText());
            assertTrue(r.json().get("error").get("message").asText().contains("java.lang.Object"));
            rt.awaitCallbacks();
            assertEquals(1, callbacks.calls.size());
            InvocationResult result = callbacks.calls.get(0).result();
            assertFalse(result.isSuccess());
            assertEquals("FUNCTION_ERROR", result.error().code());
        }
    }

    @Test
    void callbackTokenFromHeaderIsForwarded() throws Exception {
        try (CallbackSink sink = new CallbackSink();
                TestRuntime rt =
                        TestRuntime.start(
                                Map.of("CALLBACK_URL", sink.url(), "CALLBACK_TOKEN", "env-token"),
                                new EchoHandler())) {
            rt.invoke(BODY, "X-Execution-Id", "e1", "X-Callback-Token", "header-token");
            assertEquals("header-token", sink.awaitRequests(1, WAIT).get(0).header("X-Callback-Token"));
        }
    }

    @Test
    void callbackTokenFallsBackToEnvironment() throws Exception {
        try (CallbackSink sink = new CallbackSink();
                TestRuntime rt =
                        TestRuntime.start(
                                Map.of("CALLBACK_URL", sink.url(), "CALLBACK_TOKEN", "env-token"),
                                new EchoHandler())) {
            rt.invoke(BODY, "X-Execution-Id", "e1");
            assertEquals("env-token", sink.awaitRequests(1, WAIT).get(0).header("X-Callback-Token"));
        }
    }

    @Test
    void callbackUrlHeaderBeatsEnvironment() throws Exception {
        try (CallbackSink envSink = new CallbackSink();
                CallbackSink headerSink = new CallbackSink();
                TestRuntime rt =
                        TestRuntime.start(Map.of("CALLBACK_URL", envSink.url()), new EchoHandler())) {
            rt.invoke(BODY, "X-Execution-Id", "e1", "X-Callback-Url", headerSink.url());
            assertEquals(
                    "/v1/internal/executions/e1:complete",
                    headerSink.awaitRequests(1, WAIT).get(0).path());
            rt.awaitCallbacks();
            assertEquals(List.of(), envSink.received());
        }
    }

    @Test
    void noCallbackWithoutUrl() throws Exception {
        RecordingCallbacks callbacks = new RecordingCallbacks();
        try (TestRuntime rt = TestRuntime.start(Map.of("CALLBACK_TOKEN", "t"), new EchoHandler(), callbacks)) {
            assertEquals(200, rt.invoke(BODY, "X-Execution-Id", "e1").status());
            assertEquals(500, rt.invoke("{\"input\":{\"fail\":\"x\"}}", "X-Execution-Id", "e2").status());
            rt.awaitCallbacks();
            assertEquals(List.of(), callbacks.calls);
        }
    }

    @Test
    void callbackIsRetriedOnServerErrors() throws Exception {
        try (CallbackSink sink = new CallbackSink(2, 503);
                TestRuntime rt =
                        TestRuntime.start(Map.of("CALLBACK_URL", sink.url()), new EchoHandler())) {
            assertEquals(200, rt.invoke(BODY, "X-Execution-Id", "e1").status());
            rt.awaitCallbacks();
            List<CallbackSink.Received> got = sink.received();
            assertEquals(3, got.size(), "two refusals then a delivery: " + got);
            for (CallbackSink.Received r : got) {
                assertEquals("/v1/internal/executions/e1:complete", r.path());
            }
        }
    }

    @Test
    void callbackGivesUpAfterItsAttemptsWithoutFailingTheCall() throws Exception {
        try (CallbackSink sink = new CallbackSink(100, 500);
                TestRuntime rt =
                        TestRuntime.start(
                                Map.of("CALLBACK_URL", sink.url(), "CALLBACK_ATTEMPTS", "3"),
                                new EchoHandler())) {
            assertEquals(200, rt.invoke(BODY, "X-Execution-Id", "e1").status());
            rt.awaitCallbacks();
            assertEquals(3, sink.received().size());
        }
    }

    @Test
    void callbackIsNotRetriedOnClientErrors() throws Exception {
        try (CallbackSink sink = new CallbackSink(100, 403);
                TestRuntime rt =
                        TestRuntime.start(Map.of("CALLBACK_URL", sink.url()), new EchoHandler())) {
            assertEquals(200, rt.invoke(BODY, "X-Execution-Id", "e1").status());
            rt.awaitCallbacks();
            assertEquals(1, sink.received().size());
        }
    }

    @Test
    void unreachableCallbackDoesNotFailTheCall() throws Exception {
        try (TestRuntime rt =
                TestRuntime.start(
                        // Port 9 (discard) on loopback: nothing listens there, the connection is refused.
                        Map.of("CALLBACK_URL", "http://127.0.0.1:9/cb", "CALLBACK_TIMEOUT_MS", "500"),
                        new EchoHandler())) {
            assertEquals(200, rt.invoke(BODY, "X-Execution-Id", "e1").status());
            rt.awaitCallbacks();
            assertEquals(200, rt.invoke(BODY, "X-Execution-Id", "e2").status());
        }
    }

    @Test
    void metadataAndInputReachTheHandler() throws Exception {
        List<InvocationRequest> seen = Collections.synchronizedList(new ArrayList<>());
        try (TestRuntime rt =
                TestRuntime.start(
                        Map.of(),
                        request -> {
                            seen.add(request);
                            return request.inputAs(Map.class);
                        })) {
            TestRuntime.Response r =
                    rt.invoke(
                            "{\"input\": {\"a\": 1}, \"metadata\": {\"tenant\": \"t1\"}, \"extra\": true}",
                            "X-Execution-Id",
                            "e1",
                            "X-Trace-Id",
                            "tr");
            assertEquals(200, r.status());
            assertEquals(1, r.json().get("a").asInt());
            InvocationRequest req = seen.get(0);
            assertEquals(Map.of("tenant", "t1"), req.metadata());
            assertEquals("e1", req.executionId());
            assertEquals("tr", req.traceId());
        }
    }

    @Test
    void emptyBodyMeansNullInputAndNoMetadata() throws Exception {
        List<InvocationRequest> seen = Collections.synchronizedList(new ArrayList<>());
        try (TestRuntime rt =
                TestRuntime.start(
                        Map.of(),
                        request -> {
                            seen.add(request);
                            return null;
                        })) {
            TestRuntime.Response r = rt.invoke("", "X-Execution-Id", "e1");
            assertEquals(200, r.status());
            assertTrue(r.json().isNull());
            assertTrue(seen.get(0).input().isNull());
            assertEquals(Map.of(), seen.get(0).metadata());
        }
    }

    @Test
    void invalidRequestsAre400BeforeTheHandlerRuns() throws Exception {
        AtomicInteger calls = new AtomicInteger();
        try (TestRuntime rt = TestRuntime.start(Map.of(), request -> calls.incrementAndGet())) {
            String[][] cases = {
                {"{\"input\": ", "invalid JSON"},
                {"{\"input\": 1} trailing", "invalid JSON"},
                {"[1, 2]", "must be a JSON object"},
                {"\"text\"", "must be a JSON object"},
                {"{\"metadata\": [1]}", "metadata"},
                {"{\"metadata\": {\"k\": 1}}", "metadata.k"},
            };
            for (String[] c : cases) {
                TestRuntime.Response r = rt.invoke(c[0], "X-Execution-Id", "e1");
                assertEquals(400, r.status(), c[0]);
                assertTrue(r.json().get("error").asText().contains(c[1]), c[0] + " -> " + r.json());
            }
            String deep = "{\"input\": " + "[".repeat(5000) + "]".repeat(5000) + "}";
            assertEquals(400, rt.invoke(deep, "X-Execution-Id", "e1").status());
            TestRuntime.Response r = rt.invoke(BODY, "X-Execution-Id", "bad/id");
            assertEquals(400, r.status());
            assertTrue(r.json().get("error").asText().contains("X-Execution-Id"));
            r = rt.invoke(BODY, "X-Execution-Id", "e1", "X-Callback-Url", "ftp://host/cb");
            assertEquals(400, r.status());
            assertTrue(r.json().get("error").asText().contains("X-Callback-Url"));
            assertEquals(0, calls.get());
        }
    }

    @Test
    void bodyOverTheLimitIs413() throws Exception {
        try (TestRuntime rt = TestRuntime.start(Map.of("MAX_BODY_BYTES", "64"), new EchoHandler())) {
            String big = "{\"input\": \"" + "x".repeat(100) + "\"}";
            TestRuntime.Response r = rt.invoke(big, "X-Execution-Id", "e1");
            assertEquals(413, r.status());
            assertTrue(r.json().get("error").asText().contains("MAX_BODY_BYTES=64"));
            String fits = "{\"input\": \"" + "x".repeat(40) + "\"}";
            assertEquals(200, rt.invoke(fits, "X-Execution-Id", "e2").status());
        }
    }

    @Test
    void unknownRoutesAndMethodsAreRefused() throws Exception {
        try (TestRuntime rt = TestRuntime.start(Map.of(), new EchoHandler())) {
            TestRuntime.Response r = rt.send("GET", "/invoke", null);
            assertEquals(405, r.status());
            assertEquals("POST", r.header("Allow"));
            r = rt.send("POST", "/health", "{}");
            assertEquals(405, r.status());
            r = rt.send("GET", "/nope", null);
            assertEquals(404, r.status());
            assertNotNull(r.json().get("error"));
            r = rt.send("POST", "/invoke/extra", "{}", "X-Execution-Id", "e1");
            assertEquals(404, r.status());
        }
    }

    @Test
    void oneInstanceServesManySequentialInvocations() throws Exception {
        AtomicInteger instances = new AtomicInteger();
        class Counting implements FunctionHandler {
            private int served;

            Counting() {
                instances.incrementAndGet();
            }

            @Override
            public Object handle(InvocationRequest request) {
                return ++served;
            }
        }
        try (TestRuntime rt = TestRuntime.start(Map.of(), new Counting())) {
            for (int i = 1; i <= 50; i++) {
                TestRuntime.Response r = rt.invoke(BODY, "X-Execution-Id", "e" + i);
                assertEquals(200, r.status());
                assertEquals(i, r.json().asInt(), "warm state kept between invocations");
            }
            assertEquals(1, instances.get());
        }
    }
}
