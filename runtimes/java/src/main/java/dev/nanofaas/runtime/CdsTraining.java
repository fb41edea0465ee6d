package dev.nanofaas.runtime;

import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;

/**
 * A training run for the AppCDS archive made by {@code build.sh}: starts the runtime on a loopback
 * port with a built-in handler, sends it health checks, successful, failing and malformed
 * invocations with callbacks to a local sink, then exits. Run with
 * {@code -XX:ArchiveClassesAtExit=...}, the classes all that loads end up in the archive, which
 * later starts shave class loading off the cold start. Not part of the public API.
 */
final class CdsTraining {

    private CdsTraining() {}

    /** The handler of the training run: echoes, or fails when the input has "fail". */
    public static final class TrainingHandler implements FunctionHandler {
        @Override
        public Object handle(InvocationRequest request) {
            if (request.input().has("fail")) {
                throw new IllegalStateException(request.input().get("fail").asText());
            }
            return Map.of("echo", request.input(), "metadata", request.metadata());
        }
    }

    /** A function API handler for the training run: the adapter's path, both kinds of output. */
    public static final class TrainingApiHandler implements dev.nanofaas.function.FunctionHandler {
        @Override
        public Object handle(dev.nanofaas.function.Request request) {
            Map<String, Object> in = request.inputObject();
            if (in.containsKey("raw")) {
                return dev.nanofaas.function.Response.json(request.inputJson());
            }
            return Map.of("echo", in, "metadata", request.metadata());
        }
    }

    /** Loads the function API's classes and the handler class loader's, as a handler's start does. */
    private static void trainFunctionApi() throws Exception {
        ClassLoader own = CdsTraining.class.getClassLoader();
        HandlerClassLoader isolated = new HandlerClassLoader(new java.net.URL[0], own);
        isolated.loadClass(dev.nanofaas.function.FunctionHandler.class.getName());
        isolated.loadClass("java.util.LinkedHashMap");
        ApiHandler api = new ApiHandler(new TrainingApiHandler(), own);
        String[] inputs = {"{\"n\":1,\"s\":\"x\\u00e9\",\"l\":[1.5,true,null,-2e3]}", "{\"raw\":[1,{}]}"};
        for (int i = 0; i < 20; i++) {
            for (String input : inputs) {
                InvocationRequest request =
                        new InvocationRequest(Json.MAPPER.readTree(input), Map.of("k", "v"), "t", null);
                Json.MAPPER.writeValueAsBytes(api.handle(request));
            }
        }
    }

    /**
     * A prewarmed instance's path: its warm-up (whose first uses of the JDK then load from the
     * archive too, also for handlers of normal starts), then a specialization and invocations.
     * Its environment is a map here: the JVM's own needs --add-opens, which the training run does
     * not have (only the reflective step is not archived).
     */
    private static void trainPrewarm(HttpClient client) throws Exception {
        try {
            ProcessEnv.open();
        } catch (StartupException expected) {
            // no --add-opens here
        }
        Map<String, String> written = new HashMap<>();
        Specializer.Environment environment =
                new Specializer.Environment() {
                    @Override
                    public void set(Map<String, String> vars) {
                        written.putAll(vars);
                    }

                    @Override
                    public void unset(String name) {
                        written.remove(name);
                    }
                };
        Map<String, String> env = new HashMap<>();
        env.put("PORT", "0");
        env.put("LOG_LEVEL", "error");
        env.put(Specializer.PREWARM_ENV, "1");
        env.put(Specializer.WARMUP_ENV, "200");
        RuntimeServer server =
                Main.startPrewarmed(env, CdsTraining.class.getClassLoader(), environment, code -> {});
        String previousUserDir = System.getProperty("user.dir");
        try {
            String base = "http://127.0.0.1:" + server.port();
            send(client, HttpRequest.newBuilder(URI.create(base + "/health")).GET());
            send(
                    client,
                    HttpRequest.newBuilder(URI.create(base + "/invoke"))
                            .POST(HttpRequest.BodyPublishers.ofString("{}")));
            String body =
                    Specializer.body(
                            "training",
                            Map.of("FUNCTION_HANDLER", TrainingApiHandler.class.getName()),
                            previousUserDir);
            send(
                    client,
                    HttpRequest.newBuilder(URI.create(base + Specializer.PATH))
                            .POST(HttpRequest.BodyPublishers.ofString(body)));
            for (int i = 0; i < 20; i++) {
                send(
                        client,
                        HttpRequest.newBuilder(URI.create(base + "/invoke"))
                                .header("X-Execution-Id", "prewarm-" + i)
                                .POST(HttpRequest.BodyPublishers.ofString("{\"input\":{\"n\":1}}")));
            }
        } finally {
            server.shutdown();
            System.setProperty("user.dir", previousUserDir);
        }
    }

    public static void main(String[] args) throws Exception {
        trainFunctionApi();
        RuntimeServer.configureJdkHttpServer();
        HttpServer sink = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 16);
        sink.createContext(
                "/",
                exchange -> {
                    exchange.getRequestBody().readAllBytes();
                    exchange.sendResponseHeaders(204, -1);
                    exchange.close();
                });
        sink.start();
        Map<String, String> env = new HashMap<>();
        env.put("PORT", "0");
        env.put("LOG_LEVEL", "error");
        env.put("CALLBACK_URL", "http://127.0.0.1:" + sink.getAddress().getPort() + "/cb");
        env.put("CALLBACK_TOKEN", "training");
        env.put("SHUTDOWN_GRACE_MS", "2000");
        try {
            // The registration path, which finds nothing here.
            HandlerLoader.load(null, CdsTraining.class.getClassLoader());
        } catch (StartupException expected) {
            // no provider registered in the runtime jar itself
        }
        env.put("FUNCTION_HANDLER", TrainingHandler.class.getName());
        RuntimeServer server = Main.start(new String[0], env, CdsTraining.class.getClassLoader());
        try {
            HttpClient client =
                    HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
            String base = "http://127.0.0.1:" + server.port();
            String[] bodies = {
                "{\"input\":{\"n\":1,\"s\":\"x\",\"l\":[1.5,true,null]},"
                        + "\"metadata\":{\"k\":\"v\"}}",
                "{\"input\":{\"fail\":\"boom\"}}",
                "{not json",
                "",
            };
            for (int round = 0; round < 20; round++) {
                send(client, HttpRequest.newBuilder(URI.create(base + "/health")).GET());
                for (String body : bodies) {
                    send(
                            client,
                            HttpRequest.newBuilder(URI.create(base + "/invoke"))
                                    .header("X-Execution-Id", "training-" + round)
                                    .header("X-Trace-Id", "trace-" + round)
                                    .header("Content-Type", "application/json")
                                    .POST(HttpRequest.BodyPublishers.ofString(body)));
                }
                send(client, HttpRequest.newBuilder(URI.create(base + "/invoke")).GET());
            }
            server.awaitCallbacks(10_000);
            trainPrewarm(client);
        } finally {
            server.shutdown();
            sink.stop(0);
        }
    }

    private static void send(HttpClient client, HttpRequest.Builder request) throws Exception {
        client.send(
                request.timeout(Duration.ofSeconds(5)).build(),
                HttpResponse.BodyHandlers.ofByteArray());
    }
}
