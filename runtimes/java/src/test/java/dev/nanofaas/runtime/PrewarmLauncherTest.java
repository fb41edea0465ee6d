package dev.nanofaas.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.nanofaas.runtime.fixtures.BrokenStaticHandler;
import dev.nanofaas.runtime.fixtures.EnvHandler;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A prewarmed instance as the watchdog starts it: the real launcher with {@code
 * NANOFAAS_PREWARM=1}, in an empty folder, specialized over HTTP. What only a real process shows:
 * {@code System.getenv()} (and a child process's environment) from the handler's static
 * initializer on, the exit after a failed specialization, the AppCDS archive still applying.
 */
class PrewarmLauncherTest {

    private static final HttpClient CLIENT =
            HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();

    @TempDir Path empty;
    @TempDir Path logs;

    private static Path javaDir() {
        String d = System.getProperty("nanofaas.java.dir");
        assertNotNull(d, "run the tests through runtimes/java/build.sh test (sets -Dnanofaas.java.dir)");
        return Paths.get(d);
    }

    private static Path testClasses() throws Exception {
        return Paths.get(EnvHandler.class.getProtectionDomain().getCodeSource().getLocation().toURI());
    }

    /** The launcher with NANOFAAS_PREWARM=1, nothing of a function's, in {@code cwd}. */
    private static LauncherProcessTest.Started launch(Path cwd, Map<String, String> env) throws IOException {
        ProcessBuilder pb = new ProcessBuilder(javaDir().resolve("bin/nanofaas-java-runtime").toString());
        pb.directory(cwd.toFile());
        Map<String, String> e = pb.environment();
        for (String k :
                List.of(
                        "FUNCTION_HANDLER", "HANDLER_CLASSPATH", "EXECUTION_ID", "CALLBACK_URL",
                        "CALLBACK_TOKEN", "PORT", "HOST", "THREADS", "JAVA_OPTS", "JAVA", "LOG_LEVEL",
                        "NANOFAAS_JAVA_BUILD_DIR", "MAX_BODY_BYTES", "SHUTDOWN_GRACE_MS", "GREETING",
                        "BROKEN_STATIC_SETTING", Specializer.WARMUP_ENV)) {
            e.remove(k);
        }
        e.put("PORT", "0");
        e.put(Specializer.PREWARM_ENV, "1");
        e.putAll(env);
        pb.redirectOutput(ProcessBuilder.Redirect.DISCARD);
        return new LauncherProcessTest.Started(pb.start());
    }

    private static HttpResponse<String> post(int port, String path, String body, String... headers)
            throws Exception {
        HttpRequest.Builder b =
                HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path))
                        .timeout(Duration.ofSeconds(20))
                        .POST(HttpRequest.BodyPublishers.ofString(body));
        for (int i = 0; i < headers.length; i += 2) {
            b.header(headers[i], headers[i + 1]);
        }
        return CLIENT.send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    private static HttpResponse<String> specialize(int port, Map<String, String> env, Path workingDir)
            throws Exception {
        return post(
                port,
                Specializer.PATH,
                Specializer.body("fn", env, workingDir == null ? null : workingDir.toString()),
                "Content-Type",
                "application/json");
    }

    @Test
    void theHandlerSeesTheFunctionsEnvironmentFromItsStaticInitializerOn() throws Exception {
        Path classes = testClasses();
        // The default warm-up: the listening line says all its invocations were answered.
        try (LauncherProcessTest.Started rt = launch(empty, Map.of())) {
            int port = rt.awaitPort();
            String listening =
                    rt.stderr().stream().filter(l -> l.contains("listening on")).findFirst().orElseThrow();
            int n = PrewarmWarmUp.DEFAULT_REQUESTS;
            assertTrue(listening.contains("prewarmed"), listening);
            assertTrue(listening.contains("warm-up: " + n + "/" + n + " invocations"), listening);
            assertEquals(503, post(port, "/invoke", "{}", "X-Execution-Id", "e0").statusCode());

            Map<String, String> env = new LinkedHashMap<>();
            env.put("FUNCTION_HANDLER", EnvHandler.class.getName());
            // Relative: resolved against workingDir (the process runs in an empty folder).
            env.put("HANDLER_CLASSPATH", classes.getFileName().toString());
            env.put("GREETING", "hi from the function");
            HttpResponse<String> s = specialize(port, env, classes.getParent());
            assertEquals(200, s.statusCode(), s.body() + " " + rt.stderr());
            JsonNode answer = Json.MAPPER.readTree(s.body());
            assertTrue(answer.path("specialized").asBoolean(), s.body());
            assertTrue(answer.path("loadMs").isNumber(), s.body());

            for (int i = 1; i <= 2; i++) {
                HttpResponse<String> r = post(port, "/invoke", "{}", "X-Execution-Id", "e" + i);
                assertEquals(200, r.statusCode(), r.body() + " " + rt.stderr());
                JsonNode out = Json.MAPPER.readTree(r.body());
                assertEquals("hi from the function", out.path("greeting").asText(), r.body());
                assertEquals("hi from the function", out.path("greetingInMap").asText(), r.body());
                assertEquals("hi from the function", out.path("childGreeting").asText(), r.body());
                assertEquals("null", out.path("prewarm").asText(), "NANOFAAS_PREWARM is gone: " + r.body());
                assertEquals(classes.getParent().toString(), out.path("userDir").asText(), r.body());
                assertEquals(rt.process.pid(), out.path("pid").asLong(), "the prewarmed process serves");
            }
            assertEquals(409, specialize(port, env, null).statusCode());
            assertTrue(
                    rt.stderr().stream().anyMatch(l -> l.contains("specialized for function fn handler=" + EnvHandler.class.getName())),
                    rt.stderr().toString());
            rt.process.destroy(); // SIGTERM
            assertEquals(143, rt.awaitExit());
        }
    }

    private void assertFailedSpecialization(Map<String, String> env, int code, String expected) throws Exception {
        try (LauncherProcessTest.Started rt = launch(empty, Map.of(Specializer.WARMUP_ENV, "0"))) {
            int port = rt.awaitPort();
            HttpResponse<String> s = specialize(port, env, testClasses().getParent());
            assertEquals(500, s.statusCode(), s.body());
            JsonNode error = Json.MAPPER.readTree(s.body()).path("error");
            assertEquals("STARTUP_ERROR", error.path("code").asText(), s.body());
            assertTrue(error.path("message").asText().contains(expected), s.body());
            assertEquals(code, rt.awaitExit(), "a failed specialization ends the process: " + rt.stderr());
            List<String> lines = rt.finalStderr();
            assertTrue(
                    lines.contains("nanofaas-java-runtime: " + error.path("message").asText()),
                    "the normal start's line: " + lines);
        }
    }

    @Test
    void aHandlerThatCannotLoadAnswersStartupErrorAndTheProcessExits() throws Exception {
        String classes = testClasses().getFileName().toString();
        assertFailedSpecialization(
                Map.of("FUNCTION_HANDLER", "com.example.Missing", "HANDLER_CLASSPATH", classes),
                StartupException.EXIT_HANDLER,
                "FUNCTION_HANDLER=com.example.Missing: class not found");
        // Its static initializer throws: the message names the initializer's exception.
        assertFailedSpecialization(
                Map.of("FUNCTION_HANDLER", BrokenStaticHandler.class.getName(), "HANDLER_CLASSPATH", classes),
                StartupException.EXIT_HANDLER,
                "IllegalStateException: BROKEN_STATIC_SETTING is not set");
        assertFailedSpecialization(
                Map.of("HANDLER_CLASSPATH", "absent.jar"),
                StartupException.EXIT_HANDLER,
                "HANDLER_CLASSPATH entry 'absent.jar' does not exist");
        assertFailedSpecialization(
                Map.of("FUNCTION_HANDLER", EnvHandler.class.getName(), "HANDLER_CLASSPATH", classes, "CALLBACK_ATTEMPTS", "99"),
                StartupException.EXIT_CONFIG,
                "CALLBACK_ATTEMPTS=99");
    }

    @Test
    void theSameHandlerLoadsWhenItsStaticInitializerFindsItsVariable() throws Exception {
        // The counterpart of the failure above: the variable comes with the specialization.
        try (LauncherProcessTest.Started rt = launch(empty, Map.of(Specializer.WARMUP_ENV, "0"))) {
            int port = rt.awaitPort();
            HttpResponse<String> s =
                    specialize(
                            port,
                            Map.of(
                                    "FUNCTION_HANDLER", BrokenStaticHandler.class.getName(),
                                    "HANDLER_CLASSPATH", testClasses().toString(),
                                    "BROKEN_STATIC_SETTING", "set"),
                            null);
            assertEquals(200, s.statusCode(), s.body());
            HttpResponse<String> r = post(port, "/invoke", "{}", "X-Execution-Id", "e1");
            assertEquals("\"set\"", r.body());
        }
    }

    @Test
    void aHandlerBundlingItsOwnJacksonWorksAfterSpecialization() throws Exception {
        String j = System.getProperty("nanofaas.test.clash-jar");
        assertNotNull(j, "run the tests through runtimes/java/build.sh test (sets -Dnanofaas.test.clash-jar)");
        Path clash = Paths.get(j);
        try (LauncherProcessTest.Started rt = launch(empty, Map.of())) {
            int port = rt.awaitPort();
            HttpResponse<String> s =
                    specialize(port, Map.of("HANDLER_CLASSPATH", "*"), clash.getParent());
            assertEquals(200, s.statusCode(), s.body() + " " + rt.stderr());
            HttpResponse<String> r =
                    post(port, "/invoke", "{\"input\": {\"name\": \"Ada\"}}", "X-Execution-Id", "c1");
            assertEquals(200, r.statusCode(), r.body() + " " + rt.stderr());
            JsonNode out = Json.MAPPER.readTree(r.body());
            assertEquals("9.9.9-bundled-by-the-handler", out.get("jackson").asText(), r.body());
            assertEquals("true", out.get("own").asText(), "ObjectMapper from the handler's own loader");
            assertEquals("true", out.get("contextLoader").asText(), "the call's context class loader");
            assertEquals("false", out.get("runtimeVisible").asText(), "the runtime's classes are not visible");
            assertEquals("Ada", out.get("name").asText());
        }
    }

    @Test
    void thePrewarmedInstanceLoadsTheRuntimeFromTheCdsArchive() throws Exception {
        // --add-opens (added by the launcher in this mode) must not cost the archive.
        Path log = logs.resolve("class-load.log");
        try (LauncherProcessTest.Started rt =
                launch(
                        empty,
                        Map.of(
                                Specializer.WARMUP_ENV, "0",
                                "JAVA_OPTS", "-Xlog:class+load=info:file=" + log))) {
            rt.awaitPort();
            rt.process.destroy(); // SIGTERM, still generic
            assertEquals(143, rt.awaitExit());
        }
        String loaded = Files.readString(log);
        for (String cls :
                List.of(
                        "dev.nanofaas.runtime.Main",
                        "dev.nanofaas.runtime.Endpoints",
                        "com.fasterxml.jackson.databind.ObjectMapper",
                        "sun.net.httpserver.ServerImpl")) {
            assertTrue(
                    loaded.contains(cls + " source: shared objects file (top)"),
                    cls + " must come from the AppCDS archive");
        }
    }
}
