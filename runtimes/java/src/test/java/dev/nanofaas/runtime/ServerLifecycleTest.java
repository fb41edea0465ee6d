package dev.nanofaas.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** THREADS, and what SIGTERM's shutdown does to running and new invocations. */
class ServerLifecycleTest {

    private static final String BODY = "{\"input\": 1}";

    /** A handler that records how many invocations overlap and blocks until released. */
    static final class Gate implements FunctionHandler {
        final AtomicInteger running = new AtomicInteger();
        final AtomicInteger maxRunning = new AtomicInteger();
        final CountDownLatch entered;
        final CountDownLatch release = new CountDownLatch(1);

        Gate(int expectedEntries) {
            entered = new CountDownLatch(expectedEntries);
        }

        @Override
        public Object handle(InvocationRequest request) throws Exception {
            int now = running.incrementAndGet();
            maxRunning.accumulateAndGet(now, Math::max);
            entered.countDown();
            try {
                if (!release.await(10, TimeUnit.SECONDS)) {
                    throw new IllegalStateException("never released");
                }
                return request.executionId();
            } finally {
                running.decrementAndGet();
            }
        }
    }

    private static CompletableFuture<TestRuntime.Response> invokeAsync(TestRuntime rt, String id) {
        return CompletableFuture.supplyAsync(
                () -> {
                    try {
                        return rt.invoke(BODY, "X-Execution-Id", id);
                    } catch (IOException | InterruptedException e) {
                        throw new IllegalStateException(e);
                    }
                });
    }

    @Test
    void twoThreadsServeTwoInvocationsAtOnce() throws Exception {
        Gate gate = new Gate(2);
        try (TestRuntime rt = TestRuntime.start(Map.of("THREADS", "2"), gate)) {
            CompletableFuture<TestRuntime.Response> a = invokeAsync(rt, "a");
            CompletableFuture<TestRuntime.Response> b = invokeAsync(rt, "b");
            assertTrue(gate.entered.await(10, TimeUnit.SECONDS), "both invocations must run together");
            gate.release.countDown();
            assertEquals(200, a.get(10, TimeUnit.SECONDS).status());
            assertEquals(200, b.get(10, TimeUnit.SECONDS).status());
            assertEquals(2, gate.maxRunning.get());
        }
    }

    @Test
    void oneThreadServesInvocationsOneAtATime() throws Exception {
        Gate gate = new Gate(1);
        try (TestRuntime rt = TestRuntime.start(Map.of(), gate)) {
            CompletableFuture<TestRuntime.Response> a = invokeAsync(rt, "a");
            assertTrue(gate.entered.await(10, TimeUnit.SECONDS));
            CompletableFuture<TestRuntime.Response> b = invokeAsync(rt, "b");
            // b is queued behind a: give it time to (wrongly) start, then let both finish.
            Thread.sleep(200);
            assertEquals(1, gate.running.get());
            gate.release.countDown();
            assertEquals("a", a.get(10, TimeUnit.SECONDS).json().asText());
            assertEquals("b", b.get(10, TimeUnit.SECONDS).json().asText());
            assertEquals(1, gate.maxRunning.get());
        }
    }

    @Test
    void shutdownLetsTheRunningInvocationFinishAndRefusesNewOnes() throws Exception {
        Gate gate = new Gate(1);
        TestRuntime rt =
                TestRuntime.start(Map.of("THREADS", "2", "SHUTDOWN_GRACE_MS", "10000"), gate);
        try {
            CompletableFuture<TestRuntime.Response> running = invokeAsync(rt, "running");
            assertTrue(gate.entered.await(10, TimeUnit.SECONDS));
            CompletableFuture<Void> stopping = CompletableFuture.runAsync(rt.server::shutdown);
            // A free thread answers a new invocation at once: refused while draining.
            TestRuntime.Response refused = waitForRefusal(rt);
            assertEquals("SHUTTING_DOWN", refused.json().get("error").get("code").asText());
            assertFalse(stopping.isDone(), "shutdown must wait for the running invocation");
            assertFalse(running.isDone());
            gate.release.countDown();
            assertEquals(200, running.get(10, TimeUnit.SECONDS).status());
            stopping.get(10, TimeUnit.SECONDS);
            assertThrows(IOException.class, () -> rt.send("GET", "/health", null));
        } finally {
            gate.release.countDown();
            rt.close();
        }
    }

    /** Invokes until the runtime answers 503 (it does once shutdown has begun); bounded. */
    private static TestRuntime.Response waitForRefusal(TestRuntime rt) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (System.nanoTime() < deadline) {
            TestRuntime.Response r = rt.invoke(BODY, "X-Execution-Id", "late");
            if (r.status() == 503) {
                return r;
            }
            assertEquals(200, r.status());
            Thread.sleep(10);
        }
        throw new AssertionError("no 503 within 10 s of shutdown");
    }

    @Test
    void withOneThreadAQueuedInvocationIsAnsweredBeforeTheServerStops() throws Exception {
        Gate gate = new Gate(1);
        TestRuntime rt = TestRuntime.start(Map.of("SHUTDOWN_GRACE_MS", "10000"), gate);
        try {
            CompletableFuture<TestRuntime.Response> running = invokeAsync(rt, "running");
            assertTrue(gate.entered.await(10, TimeUnit.SECONDS));
            CompletableFuture<Void> stopping = CompletableFuture.runAsync(rt.server::shutdown);
            CompletableFuture<TestRuntime.Response> queued = invokeAsync(rt, "queued");
            Thread.sleep(200);
            assertFalse(stopping.isDone(), "shutdown must wait for the running invocation");
            gate.release.countDown();
            assertEquals(200, running.get(10, TimeUnit.SECONDS).status());
            // Either refused while draining (503), or, if it reached the server before shutdown
            // began, run (200); never a reset connection.
            int status = queued.get(10, TimeUnit.SECONDS).status();
            assertTrue(status == 503 || status == 200, "status " + status);
            stopping.get(10, TimeUnit.SECONDS);
        } finally {
            gate.release.countDown();
            rt.close();
        }
    }

    @Test
    void shutdownWhenIdleIsPrompt() throws Exception {
        TestRuntime rt = TestRuntime.start(Map.of("SHUTDOWN_GRACE_MS", "30000"), request -> 1);
        assertEquals(200, rt.invoke(BODY, "X-Execution-Id", "e1").status());
        CompletableFuture<Void> stopping = CompletableFuture.runAsync(rt.server::shutdown);
        // Bounded wait, not a speed assertion: an idle runtime must not sit out its 30 s grace.
        stopping.get(10, TimeUnit.SECONDS);
        assertThrows(IOException.class, () -> rt.send("GET", "/health", null));
    }
}
