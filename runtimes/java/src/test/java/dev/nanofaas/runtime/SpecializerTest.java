package dev.nanofaas.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.nanofaas.runtime.fixtures.EchoHandler;
import dev.nanofaas.runtime.fixtures.GateHandler;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A prewarmed runtime in process: its states, the specialization request's checks, what it
 * applies, and its failures. The process environment itself is a recording fake here ({@link
 * PrewarmLauncherTest} checks {@code System.getenv()} in a real process).
 */
class SpecializerTest {

    /** Records what a specialization writes to the environment, in order. */
    static final class RecordingEnvironment implements Specializer.Environment {
        final List<String> calls = new ArrayList<>();

        @Override
        public synchronized void set(Map<String, String> vars) {
            calls.add("set " + new LinkedHashMap<>(vars));
        }

        @Override
        public synchronized void unset(String name) {
            calls.add("unset " + name);
        }
    }

    /** Records the exit codes asked for. */
    static final class RecordingExit implements java.util.function.IntConsumer {
        final List<Integer> codes = new ArrayList<>();

        @Override
        public synchronized void accept(int code) {
            codes.add(code);
        }
    }

    @TempDir Path dir;

    private final RecordingEnvironment environment = new RecordingEnvironment();
    private final RecordingExit exit = new RecordingExit();
    private String userDir;

    @BeforeEach
    void saveUserDir() {
        userDir = System.getProperty("user.dir");
        GateHandler.reset();
    }

    @AfterEach
    void restoreUserDir() {
        System.setProperty("user.dir", userDir);
        GateHandler.RELEASE.countDown();
    }

    private TestRuntime prewarmed() throws StartupException {
        return TestRuntime.startPrewarmed(Map.of(), environment, exit);
    }

    private static TestRuntime.Response specialize(TestRuntime rt, String body) throws Exception {
        return rt.send("POST", Specializer.PATH, body, "Content-Type", "application/json");
    }

    private static String body(Map<String, String> env, String workingDir) {
        return Specializer.body("fn", env, workingDir);
    }

    private static Path testClasses() throws Exception {
        return Paths.get(EchoHandler.class.getProtectionDomain().getCodeSource().getLocation().toURI());
    }

    @Test
    void beforeSpecializationItIsHealthyAndRefusesInvocations() throws Exception {
        try (TestRuntime rt = prewarmed()) {
            assertEquals(200, rt.send("GET", "/health", null).status());
            TestRuntime.Response invoke = rt.invoke("{}", "X-Execution-Id", "e1");
            assertEquals(503, invoke.status());
            assertEquals("STARTUP_ERROR", invoke.json().path("error").path("code").asText());
            assertEquals("not specialized", invoke.json().path("error").path("message").asText());
            assertEquals(404, rt.send("GET", "/other", null).status());
            TestRuntime.Response get = rt.send("GET", Specializer.PATH, null);
            assertEquals(405, get.status());
            assertEquals("POST", get.header("Allow"));
            assertTrue(environment.calls.isEmpty(), environment.calls.toString());
            assertTrue(exit.codes.isEmpty());
        }
    }

    @Test
    void specializeAppliesTheEnvironmentLoadsTheHandlerThenServesIt() throws Exception {
        Path classes = testClasses();
        // A relative HANDLER_CLASSPATH is resolved against workingDir, not the process's folder.
        assertFalse(Files.exists(Paths.get(classes.getFileName().toString())), "test precondition");
        try (TestRuntime rt = prewarmed()) {
            Map<String, String> env = new LinkedHashMap<>();
            env.put("FUNCTION_HANDLER", EchoHandler.class.getName());
            env.put("HANDLER_CLASSPATH", classes.getFileName().toString());
            env.put("GREETING", "hi");
            TestRuntime.Response r =
                    specialize(rt, body(env, classes.getParent().toString()));
            assertEquals(200, r.status(), String.valueOf(r.json()));
            assertTrue(r.json().path("specialized").asBoolean(), r.json().toString());
            assertTrue(r.json().path("loadMs").isNumber(), r.json().toString());
            assertTrue(r.json().path("loadMs").asDouble() >= 0, r.json().toString());
            assertEquals(
                    List.of(
                            "set " + env,
                            "unset " + Specializer.PREWARM_ENV,
                            "unset " + Specializer.WARMUP_ENV),
                    environment.calls);
            assertEquals(classes.getParent().toString(), System.getProperty("user.dir"));
            for (int i = 1; i <= 2; i++) {
                TestRuntime.Response out = rt.invoke("{\"input\": " + i + "}", "X-Execution-Id", "e" + i);
                assertEquals(200, out.status(), String.valueOf(out.json()));
                assertEquals(i, out.json().path("echo").asInt());
                assertEquals("e" + i, out.json().path("executionId").asText());
            }
            assertEquals(200, rt.send("GET", "/health", null).status());
            assertTrue(exit.codes.isEmpty());
        }
    }

    @Test
    void aSecondSpecializationIsAConflict() throws Exception {
        try (TestRuntime rt = prewarmed()) {
            String ok = body(Map.of("FUNCTION_HANDLER", EchoHandler.class.getName()), null);
            assertEquals(200, specialize(rt, ok).status());
            TestRuntime.Response again =
                    specialize(rt, body(Map.of("FUNCTION_HANDLER", GateHandler.class.getName()), null));
            assertEquals(409, again.status());
            assertEquals("ALREADY_SPECIALIZED", again.json().path("error").path("code").asText());
            // Still the first function's.
            TestRuntime.Response out = rt.invoke("{\"input\": 7}", "X-Execution-Id", "e1");
            assertEquals(200, out.status());
            assertEquals(7, out.json().path("echo").asInt());
            assertEquals(1, environment.calls.stream().filter(c -> c.startsWith("set ")).count());
        }
    }

    @Test
    void malformedRequestsAre400AndLeaveTheInstanceGeneric() throws Exception {
        try (TestRuntime rt = prewarmed()) {
            Path file = Files.writeString(dir.resolve("file"), "x");
            String[][] cases = {
                {"{not json", "invalid JSON body"},
                {"", "empty body"},
                {"[]", "must be a JSON object"},
                {"{}", "\"env\" must be an object of strings"},
                {"{\"env\": []}", "\"env\" must be an object of strings"},
                {"{\"env\": {\"A\": 1}}", "env.A must be a string"},
                {"{\"env\": {\"A=B\": \"x\"}}", "invalid variable name"},
                {"{\"env\": {\"\": \"x\"}}", "invalid variable name"},
                {"{\"env\": {\"A\": \"x\\u0000y\"}}", "env.A contains NUL"},
                {"{\"env\": {}, \"function\": 3}", "\"function\" must be a string"},
                {"{\"env\": {}, \"workingDir\": \"relative/dir\"}", "must be absolute"},
                {"{\"env\": {}, \"workingDir\": \"" + dir.resolve("absent") + "\"}", "is not a folder"},
                {"{\"env\": {}, \"workingDir\": \"" + file + "\"}", "is not a folder"},
                {"{\"env\": {}, \"workingDir\": 5}", "\"workingDir\" must be a string"},
                {"{\"env\": {}, \"timeoutMs\": 0}", "\"timeoutMs\" must be a positive integer"},
                {"{\"env\": {}, \"timeoutMs\": 1.5}", "\"timeoutMs\" must be a positive integer"},
                {"{\"env\": {}, \"timeoutMs\": \"10\"}", "\"timeoutMs\" must be a positive integer"},
            };
            for (String[] c : cases) {
                TestRuntime.Response r = specialize(rt, c[0]);
                assertEquals(400, r.status(), c[0] + " → " + r.json());
                String message = r.json().path("error").asText();
                assertTrue(message.contains(c[1]), c[0] + " → " + message);
            }
            assertTrue(environment.calls.isEmpty(), environment.calls.toString());
            assertEquals(userDir, System.getProperty("user.dir"));
            assertEquals(503, rt.invoke("{}", "X-Execution-Id", "e1").status());
            // Nothing was applied: the instance can still be specialized.
            TestRuntime.Response ok =
                    specialize(rt, body(Map.of("FUNCTION_HANDLER", EchoHandler.class.getName()), null));
            assertEquals(200, ok.status(), String.valueOf(ok.json()));
            assertTrue(exit.codes.isEmpty());
        }
    }

    @Test
    void aFunctionWithItsOwnJvmOptionsIsNotSpecializableAndChangesNothing() throws Exception {
        try (TestRuntime rt = prewarmed()) {
            TestRuntime.Response r =
                    specialize(
                            rt,
                            body(Map.of("FUNCTION_HANDLER", EchoHandler.class.getName(), "JAVA_OPTS", "-Xmx64m"), null));
            assertEquals(501, r.status(), String.valueOf(r.json()));
            assertEquals("NOT_SPECIALIZABLE", r.json().path("error").path("code").asText());
            assertTrue(r.json().path("error").path("message").asText().contains("JAVA_OPTS=-Xmx64m"), r.json().toString());
            assertTrue(environment.calls.isEmpty());
            assertTrue(exit.codes.isEmpty());
            // A blank JAVA_OPTS is no option at all: the same as the instance's.
            TestRuntime.Response ok =
                    specialize(rt, body(Map.of("FUNCTION_HANDLER", EchoHandler.class.getName(), "JAVA_OPTS", " "), null));
            assertEquals(200, ok.status(), String.valueOf(ok.json()));
        }
    }

    @Test
    void aBodyOverMaxBodyBytesIs413AndChangesNothing() throws Exception {
        try (TestRuntime rt = TestRuntime.startPrewarmed(Map.of("MAX_BODY_BYTES", "64"), environment, exit)) {
            TestRuntime.Response r =
                    specialize(rt, body(Map.of("FUNCTION_HANDLER", "x".repeat(100)), null));
            assertEquals(413, r.status());
            assertTrue(environment.calls.isEmpty());
            assertEquals(503, rt.invoke("{}", "X-Execution-Id", "e1").status());
        }
    }

    @Test
    void aHandlerThatCannotLoadIsAStartupErrorAndTheInstanceExits() throws Exception {
        try (TestRuntime rt = prewarmed()) {
            TestRuntime.Response r =
                    specialize(rt, body(Map.of("FUNCTION_HANDLER", "com.example.Missing"), null));
            assertEquals(500, r.status());
            assertEquals("STARTUP_ERROR", r.json().path("error").path("code").asText());
            String message = r.json().path("error").path("message").asText();
            assertTrue(message.contains("FUNCTION_HANDLER=com.example.Missing: class not found"), message);
            assertEquals(List.of(StartupException.EXIT_HANDLER), exit.codes);
            // Until the process is gone it serves nothing, and is never specialized again.
            TestRuntime.Response invoke = rt.invoke("{}", "X-Execution-Id", "e1");
            assertEquals(503, invoke.status());
            assertEquals(message, invoke.json().path("error").path("message").asText());
            assertEquals(503, rt.send("GET", "/health", null).status());
            TestRuntime.Response again =
                    specialize(rt, body(Map.of("FUNCTION_HANDLER", EchoHandler.class.getName()), null));
            assertEquals(409, again.status());
            assertEquals(List.of(StartupException.EXIT_HANDLER), exit.codes);
        }
    }

    @Test
    void aConfigurationANormalStartWouldRefuseIsAStartupErrorWithItsCode() throws Exception {
        try (TestRuntime rt = prewarmed()) {
            TestRuntime.Response r =
                    specialize(
                            rt,
                            body(Map.of("FUNCTION_HANDLER", EchoHandler.class.getName(), "THREADS", "zero"), null));
            assertEquals(500, r.status());
            assertEquals("STARTUP_ERROR", r.json().path("error").path("code").asText());
            assertTrue(r.json().path("error").path("message").asText().contains("THREADS=zero"), r.json().toString());
            assertEquals(List.of(StartupException.EXIT_CONFIG), exit.codes);
            // The configuration is checked before anything is applied.
            assertTrue(environment.calls.isEmpty(), environment.calls.toString());
        }
    }

    @Test
    void theFunctionsThreadsServeOnceSpecialized() throws Exception {
        // Generic: THREADS=1 (the dispatcher thread). The function asks for 2: while one
        // invocation is held, /health is still answered.
        try (TestRuntime rt = prewarmed()) {
            TestRuntime.Response r =
                    specialize(
                            rt,
                            body(Map.of("FUNCTION_HANDLER", GateHandler.class.getName(), "THREADS", "2"), null));
            assertEquals(200, r.status(), String.valueOf(r.json()));
            CompletableFuture<TestRuntime.Response> held =
                    CompletableFuture.supplyAsync(
                            () -> {
                                try {
                                    return rt.invoke("{}", "X-Execution-Id", "held");
                                } catch (Exception e) {
                                    throw new IllegalStateException(e);
                                }
                            });
            assertTrue(GateHandler.ENTERED.await(10, TimeUnit.SECONDS), "the invocation never started");
            assertEquals(200, rt.send("GET", "/health", null).status());
            assertFalse(held.isDone(), "the held invocation is still running");
            GateHandler.RELEASE.countDown();
            TestRuntime.Response done = held.get(10, TimeUnit.SECONDS);
            assertEquals(200, done.status());
            assertEquals("released", done.json().asText());
        }
    }

    @Test
    void theInstancesPortStaysWhateverTheFunctionsEnvSays() throws Exception {
        try (TestRuntime rt = prewarmed()) {
            Map<String, String> env = new LinkedHashMap<>();
            env.put("FUNCTION_HANDLER", EchoHandler.class.getName());
            env.put("PORT", "1");
            TestRuntime.Response r = specialize(rt, body(env, null));
            assertEquals(200, r.status(), String.valueOf(r.json()));
            assertEquals(
                    "set {FUNCTION_HANDLER=" + EchoHandler.class.getName() + "}",
                    environment.calls.get(0));
            assertEquals(200, rt.invoke("{}", "X-Execution-Id", "e1").status());
        }
    }

    @Test
    void theWarmUpAnswersAllItsInvocations() throws Exception {
        assertEquals(25, PrewarmWarmUp.run(25, TestRuntime.class.getClassLoader()));
    }

    @Test
    void withoutTheAddOpensTheEnvironmentCannotBeWrittenAndThatIsAStartupError() {
        // This JVM (the test launcher's) has no --add-opens java.base/java.util: as a prewarmed
        // runtime started without the launcher, it must refuse to start, not fail later.
        StartupException e = org.junit.jupiter.api.Assertions.assertThrows(StartupException.class, ProcessEnv::open);
        assertEquals(StartupException.EXIT_CONFIG, e.exitCode());
        assertTrue(e.getMessage().contains(ProcessEnv.ADD_OPENS), e.getMessage());
    }

    @Test
    void prewarmIsRequestedBy1Only() throws Exception {
        assertTrue(Specializer.requested(Map.of(Specializer.PREWARM_ENV, "1")));
        assertFalse(Specializer.requested(Map.of(Specializer.PREWARM_ENV, "0")));
        assertFalse(Specializer.requested(Map.of(Specializer.PREWARM_ENV, " ")));
        assertFalse(Specializer.requested(Map.of()));
        StartupException e =
                org.junit.jupiter.api.Assertions.assertThrows(
                        StartupException.class,
                        () -> Specializer.requested(Map.of(Specializer.PREWARM_ENV, "yes")));
        assertEquals(StartupException.EXIT_CONFIG, e.exitCode());
        StartupException w =
                org.junit.jupiter.api.Assertions.assertThrows(
                        StartupException.class,
                        () -> Main.warmUpRequests(Map.of(Specializer.WARMUP_ENV, "-1")));
        assertEquals(StartupException.EXIT_CONFIG, w.exitCode());
        assertEquals(PrewarmWarmUp.DEFAULT_REQUESTS, Main.warmUpRequests(Map.of()));
    }
}
