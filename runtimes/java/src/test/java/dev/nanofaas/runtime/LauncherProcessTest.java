package dev.nanofaas.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import dev.nanofaas.runtime.fixtures.EchoHandler;
import dev.nanofaas.runtime.fixtures.OtherHandler;
import dev.nanofaas.runtime.fixtures.SleepHandler;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * End to end: the real launcher script starts a real JVM on 127.0.0.1 with the test handlers on
 * HANDLER_CLASSPATH. build.sh passes {@code -Dnanofaas.java.dir} (the runtimes/java directory).
 */
class LauncherProcessTest {

    private static final Duration START = Duration.ofSeconds(30);
    private static final Pattern LISTENING = Pattern.compile("listening on 127\\.0\\.0\\.1:(\\d+) ");
    private static final HttpClient CLIENT =
            HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();

    @TempDir Path dir;

    /** A started launcher with its stderr collected line by line. */
    static final class Started implements AutoCloseable {
        final Process process;
        private final List<String> stderr = new ArrayList<>();

        Started(Process process) {
            this.process = process;
            Thread reader =
                    new Thread(
                            () -> {
                                try (BufferedReader r =
                                        new BufferedReader(
                                                new InputStreamReader(
                                                        process.getErrorStream(), StandardCharsets.UTF_8))) {
                                    for (String line; (line = r.readLine()) != null; ) {
                                        synchronized (this) {
                                            stderr.add(line);
                                            notifyAll();
                                        }
                                    }
                                } catch (IOException ignored) {
                                    // the process is gone
                                }
                                synchronized (this) {
                                    notifyAll();
                                }
                            },
                            "launcher-stderr");
            reader.setDaemon(true);
            reader.start();
        }

        synchronized List<String> stderr() {
            return List.copyOf(stderr);
        }

        /** The port from the "listening on" line; fails if the process exits or is too slow. */
        synchronized int awaitPort() throws InterruptedException {
            long deadline = System.nanoTime() + START.toNanos();
            while (true) {
                for (String line : stderr) {
                    Matcher m = LISTENING.matcher(line);
                    if (m.find()) {
                        return Integer.parseInt(m.group(1));
                    }
                }
                if (!process.isAlive()) {
                    fail("the runtime exited with " + process.exitValue() + ": " + stderr);
                }
                long left = (deadline - System.nanoTime()) / 1_000_000L;
                if (left <= 0) {
                    fail("the runtime did not start listening within " + START + ": " + stderr);
                }
                wait(Math.min(left, 100));
            }
        }

        /** Waits for the exit (bounded) and returns its code. */
        int awaitExit() throws InterruptedException {
            if (!process.waitFor(START.toSeconds(), TimeUnit.SECONDS)) {
                fail("the runtime did not exit within " + START + ": " + stderr());
            }
            return process.exitValue();
        }

        /** stderr once the process has exited and the reader has drained it. */
        List<String> finalStderr() throws InterruptedException {
            awaitExit();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            synchronized (this) {
                // The reader notifies at end of stream; a bounded wait covers the last lines.
                while (System.nanoTime() < deadline) {
                    wait(50);
                    if (!process.isAlive()) {
                        break;
                    }
                }
            }
            return stderr();
        }

        @Override
        public void close() throws InterruptedException {
            process.destroyForcibly();
            process.waitFor(10, TimeUnit.SECONDS);
        }
    }

    private static Path javaDir() {
        String d = System.getProperty("nanofaas.java.dir");
        assertNotNull(d, "run the tests through runtimes/java/build.sh test (sets -Dnanofaas.java.dir)");
        return Paths.get(d);
    }

    private static String testClasses() throws Exception {
        return Paths.get(EchoHandler.class.getProtectionDomain().getCodeSource().getLocation().toURI())
                .toString();
    }

    private static Started launch(Map<String, String> env) throws IOException {
        ProcessBuilder pb = new ProcessBuilder(javaDir().resolve("bin/nanofaas-java-runtime").toString());
        Map<String, String> e = pb.environment();
        for (String k :
                List.of(
                        "FUNCTION_HANDLER", "HANDLER_CLASSPATH", "EXECUTION_ID", "CALLBACK_URL",
                        "CALLBACK_TOKEN", "PORT", "HOST", "THREADS", "JAVA_OPTS", "JAVA", "LOG_LEVEL",
                        "NANOFAAS_JAVA_BUILD_DIR", "MAX_BODY_BYTES", "SHUTDOWN_GRACE_MS")) {
            e.remove(k);
        }
        e.put("PORT", "0");
        e.putAll(env);
        pb.redirectOutput(ProcessBuilder.Redirect.DISCARD);
        return new Started(pb.start());
    }

    private static HttpResponse<String> call(String method, int port, String path, String body, String... headers)
            throws Exception {
        HttpRequest.Builder b =
                HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path))
                        .timeout(Duration.ofSeconds(10))
                        .method(method, body == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofString(body));
        for (int i = 0; i < headers.length; i += 2) {
            b.header(headers[i], headers[i + 1]);
        }
        return CLIENT.send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    @Test
    void launcherServesWarmInvocationsFromOneProcessAndStopsOnSigterm() throws Exception {
        try (Started rt =
                launch(Map.of("FUNCTION_HANDLER", EchoHandler.class.getName(), "HANDLER_CLASSPATH", testClasses()))) {
            int port = rt.awaitPort();
            HttpResponse<String> health = call("GET", port, "/health", null);
            assertEquals(200, health.statusCode());
            assertEquals("{\"status\":\"ok\"}", health.body());
            long pid = -1;
            for (int i = 1; i <= 2; i++) {
                HttpResponse<String> r =
                        call("POST", port, "/invoke", "{\"input\": " + i + "}", "X-Execution-Id", "e" + i);
                assertEquals(200, r.statusCode(), r.body());
                JsonNode out = Json.MAPPER.readTree(r.body());
                assertEquals(i, out.get("echo").asInt());
                // The launcher execs the JVM: the process we started is the one answering.
                assertEquals(rt.process.pid(), out.get("pid").asLong());
                if (pid >= 0) {
                    assertEquals(pid, out.get("pid").asLong());
                }
                pid = out.get("pid").asLong();
            }
            rt.process.destroy(); // SIGTERM
            assertEquals(143, rt.awaitExit(), "a JVM stopped by SIGTERM exits 128+15");
        }
    }

    @Test
    void launcherLoadsTheRuntimeAndJacksonFromTheCdsArchive() throws Exception {
        // The archive silently stops applying when the classpath drifts from the one it was made
        // with (it did once: Jackson reached through the jar manifest only). Check that it applies.
        Path log = dir.resolve("class-load.log");
        try (Started rt =
                launch(
                        Map.of(
                                "FUNCTION_HANDLER", EchoHandler.class.getName(),
                                "HANDLER_CLASSPATH", testClasses(),
                                "JAVA_OPTS", "-Xlog:class+load=info:file=" + log))) {
            int port = rt.awaitPort();
            assertEquals(
                    200, call("POST", port, "/invoke", "{}", "X-Execution-Id", "e1").statusCode());
            rt.process.destroy();
            rt.awaitExit();
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

    @Test
    void launcherFindsASingleRegisteredHandler() throws Exception {
        Path services = dir.resolve(HandlerLoader.SERVICE_FILE);
        Files.createDirectories(services.getParent());
        Files.writeString(services, OtherHandler.class.getName() + "\n");
        try (Started rt = launch(Map.of("HANDLER_CLASSPATH", dir + ":" + testClasses()))) {
            int port = rt.awaitPort();
            HttpResponse<String> r = call("POST", port, "/invoke", "{}", "X-Execution-Id", "e1");
            assertEquals(200, r.statusCode());
            assertEquals("\"other\"", r.body());
        }
    }

    @Test
    void sigtermDuringAStuckInvocationStillStopsTheProcess() throws Exception {
        try (Started rt =
                launch(
                        Map.of(
                                "FUNCTION_HANDLER", SleepHandler.class.getName(),
                                "HANDLER_CLASSPATH", testClasses(),
                                "SHUTDOWN_GRACE_MS", "300"))) {
            int port = rt.awaitPort();
            CompletableFuture<HttpResponse<String>> stuck =
                    CLIENT.sendAsync(
                            HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/invoke"))
                                    .header("X-Execution-Id", "stuck")
                                    .timeout(Duration.ofSeconds(60))
                                    .POST(HttpRequest.BodyPublishers.ofString("{\"input\": {\"sleepMs\": 600000}}"))
                                    .build(),
                            HttpResponse.BodyHandlers.ofString());
            Thread.sleep(500); // let the invocation start
            assertTrue(rt.process.isAlive());
            rt.process.destroy(); // SIGTERM
            // The grace is 300 ms: the process must not wait for the ten-minute handler.
            assertEquals(143, rt.awaitExit());
            stuck.cancel(true);
        }
    }

    private void assertStartupFailure(Map<String, String> env, int code, String expected) throws Exception {
        try (Started rt = launch(env)) {
            assertEquals(code, rt.awaitExit(), "exit code for " + env + ": " + rt.stderr());
            List<String> lines = rt.finalStderr().stream().filter(l -> !l.isBlank()).toList();
            assertEquals(1, lines.size(), "exactly one line on stderr: " + lines);
            assertTrue(lines.get(0).startsWith("nanofaas-java-runtime: "), lines.get(0));
            assertTrue(lines.get(0).contains(expected), lines.get(0));
        }
    }

    @Test
    void startupErrorsPrintOneLineAndExitWithTheirCode() throws Exception {
        String classes = testClasses();
        assertStartupFailure(
                Map.of("FUNCTION_HANDLER", "com.example.Missing", "HANDLER_CLASSPATH", classes),
                StartupException.EXIT_HANDLER,
                "class not found");
        assertStartupFailure(Map.of("HANDLER_CLASSPATH", classes), StartupException.EXIT_HANDLER, "no handler found");
        assertStartupFailure(
                Map.of("PORT", "eighty", "FUNCTION_HANDLER", EchoHandler.class.getName(), "HANDLER_CLASSPATH", classes),
                StartupException.EXIT_CONFIG,
                "PORT=eighty");

        Path services = dir.resolve(HandlerLoader.SERVICE_FILE);
        Files.createDirectories(services.getParent());
        Files.writeString(services, EchoHandler.class.getName() + "\n" + OtherHandler.class.getName() + "\n");
        assertStartupFailure(
                Map.of("HANDLER_CLASSPATH", dir + ":" + classes),
                StartupException.EXIT_HANDLER,
                "several handlers found");

        try (ServerSocket taken = new ServerSocket(0, 1, InetAddress.getByName("127.0.0.1"))) {
            assertStartupFailure(
                    Map.of(
                            "PORT", Integer.toString(taken.getLocalPort()),
                            "FUNCTION_HANDLER", EchoHandler.class.getName(),
                            "HANDLER_CLASSPATH", classes),
                    StartupException.EXIT_LISTEN,
                    "cannot listen on 127.0.0.1:" + taken.getLocalPort());
        }
    }

    private static Path clashJar() {
        String j = System.getProperty("nanofaas.test.clash-jar");
        assertNotNull(j, "run the tests through runtimes/java/build.sh test (sets -Dnanofaas.test.clash-jar)");
        return Paths.get(j);
    }

    @Test
    void aHandlerBundlingItsOwnJacksonRunsWithItsOwnInAClassLoaderOfItsOwn() throws Exception {
        // The jar's "com.fasterxml.jackson.databind.ObjectMapper" has another API than the
        // runtime's Jackson: with the runtime's class loaded instead, the handler fails to link.
        // Found through a `dir/*` entry, registered in META-INF/services/dev.nanofaas.function.FunctionHandler.
        try (Started rt = launch(Map.of("HANDLER_CLASSPATH", clashJar().getParent() + "/*"))) {
            int port = rt.awaitPort();
            for (int i = 0; i < 2; i++) {
                HttpResponse<String> r =
                        call("POST", port, "/invoke", "{\"input\": {\"name\": \"Ada\"}}", "X-Execution-Id", "c" + i);
                assertEquals(200, r.statusCode(), r.body() + " " + rt.stderr());
                JsonNode out = Json.MAPPER.readTree(r.body());
                assertEquals("9.9.9-bundled-by-the-handler", out.get("jackson").asText(), r.body());
                assertEquals("true", out.get("own").asText(), "ObjectMapper from the handler's own loader");
                assertEquals("true", out.get("contextLoader").asText(), "the call's context class loader");
                assertEquals("false", out.get("runtimeVisible").asText(), "the runtime's classes are not visible");
                assertEquals("Ada", out.get("name").asText());
                assertEquals("{\"name\":\"Ada\"}", out.get("input").asText());
            }
            // A Response that is not JSON is the function's error, checked by the runtime.
            HttpResponse<String> bad =
                    call("POST", port, "/invoke", "{\"input\": {\"name\": \"bad\"}}", "X-Execution-Id", "b");
            assertEquals(500, bad.statusCode());
            assertEquals("FUNCTION_ERROR", Json.MAPPER.readTree(bad.body()).path("error").path("code").asText(), bad.body());
            assertTrue(rt.stderr().stream().anyMatch(l -> l.contains("handler=com.example.clash.ClashHandler")), rt.stderr().toString());
        }
    }

    @Test
    void aMissingHandlerClasspathEntryIsAStartupError() throws Exception {
        assertStartupFailure(
                Map.of("HANDLER_CLASSPATH", dir.resolve("absent.jar") + ":" + clashJar()),
                StartupException.EXIT_HANDLER,
                "absent.jar' does not exist");
    }
}
