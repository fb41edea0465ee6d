package dev.nanofaas.runtime;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpExchange;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Executor;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;
import java.util.function.IntConsumer;

/**
 * A prewarmed runtime ({@code NANOFAAS_PREWARM=1}): a generic instance that listens without a
 * handler and becomes one function's, once, on {@code POST /_nanofaas/specialize} (the
 * specialization protocol shared with the watchdog and the control plane).
 *
 * <p>States: {@code GENERIC → SPECIALIZING → SPECIALIZED}, or {@code → FAILED} (then the process
 * exits). While generic, {@code GET /health} answers 200 and {@code POST /invoke} 503 {@code
 * STARTUP_ERROR "not specialized"}. Specialization, for a body {@code {"function", "env",
 * "workingDir", "timeoutMs"}}:
 *
 * <ol>
 *   <li>the runtime's configuration is read again from the instance's environment plus {@code
 *       env} (as a normal start of the function would read it; {@code HOST} and {@code PORT} stay
 *       the instance's, which already listens), and checked;
 *   <li>{@code env} is written into the process's environment ({@link Environment}: {@code
 *       System.getenv()}), and {@code NANOFAAS_PREWARM} / {@code NANOFAAS_PREWARM_WARMUP} removed
 *       unless {@code env} sets them: a handler sees what a normal start would show it;
 *   <li>{@code user.dir} is set to {@code workingDir}, and {@code HANDLER_CLASSPATH}'s relative
 *       entries are resolved against it (the OS working directory cannot be changed from Java);
 *   <li>the handler is loaded as a normal start loads it (its own child-first class loader), so
 *       its static initializer already sees the function's environment;
 *   <li>from then on every request goes to the function's {@link Endpoints}; the answer is 200
 *       {@code {"specialized": true, "loadMs": <ms>}}.
 * </ol>
 *
 * A malformed request (400, 413) changes nothing: the instance stays generic; so does a function
 * whose env sets a variable of the launcher's ({@link #LAUNCHER_ENV}, e.g. {@code JAVA_OPTS})
 * differently from the instance (501 {@code NOT_SPECIALIZABLE}: start it cold). A configuration or
 * handler that a normal start would refuse answers 500 {@code {"error": {"code": "STARTUP_ERROR",
 * "message": ...}}}, prints the normal start's one line on stderr, and the process exits with the
 * normal start's code (2 or 3): a failed instance never serves. Any later specialization is 409.
 */
final class Specializer implements RuntimeServer.PrewarmRoutes {

    static final String PREWARM_ENV = "NANOFAAS_PREWARM";
    static final String WARMUP_ENV = "NANOFAAS_PREWARM_WARMUP";
    static final String PATH = "/_nanofaas/specialize";
    static final String STARTUP_ERROR = "STARTUP_ERROR";
    static final String ALREADY_SPECIALIZED = "ALREADY_SPECIALIZED";
    static final String NOT_SPECIALIZABLE = "NOT_SPECIALIZABLE";

    /**
     * Read before the JVM runs any code (by the launcher: JVM options, which JVM, which build; by
     * the {@code java} launcher and the JVM themselves: their option variables): a running JVM
     * cannot take another value, so a function that sets one differently from the instance is
     * answered 501 and must be started cold.
     */
    static final List<String> LAUNCHER_ENV =
            List.of(
                    "JAVA_OPTS",
                    "JAVA",
                    "NANOFAAS_JAVA_BUILD_DIR",
                    "JDK_JAVA_OPTIONS",
                    "JAVA_TOOL_OPTIONS");

    /** The process environment that a handler reads ({@link ProcessEnv}; a fake in tests). */
    interface Environment {
        void set(Map<String, String> vars);

        void unset(String name);
    }

    enum State {
        GENERIC,
        SPECIALIZING,
        SPECIALIZED,
        FAILED
    }

    /** A checked specialization request. */
    record Request(String function, Map<String, String> env, Path workingDir) {}

    /** A client mistake in the specialization request: answered 400, nothing changed. */
    static final class BadRequest extends Exception {
        private static final long serialVersionUID = 1L;

        BadRequest(String message) {
            super(message, null, false, false);
        }
    }

    /** Whether {@code env} asks for a prewarmed start: {@code 1} yes, unset/blank/{@code 0} no. */
    static boolean requested(Map<String, String> env) throws StartupException {
        String v = env.get(PREWARM_ENV);
        if (v == null || v.isBlank() || v.trim().equals("0")) {
            return false;
        }
        if (v.trim().equals("1")) {
            return true;
        }
        throw new StartupException(
                StartupException.EXIT_CONFIG, PREWARM_ENV + "=" + v + ": expected 1 or 0");
    }

    private final RuntimeConfig base;
    private final Map<String, String> baseEnv;
    private final ClassLoader loader;
    private final Environment environment;
    private final Function<RuntimeConfig, CallbackClient> callbackClients;
    private final IntConsumer exit;
    private final AtomicReference<State> state = new AtomicReference<>(State.GENERIC);
    private final AtomicLong requestsSeen = new AtomicLong();
    /** Set (before the state becomes SPECIALIZED) once specialized. */
    private volatile Endpoints endpoints;
    /** Why the specialization failed, for the requests answered before the process is gone. */
    private volatile String failure;

    private RuntimeServer server;
    private Executor callbackExecutor;
    private InFlight inFlight;

    /**
     * @param base the instance's configuration (its environment's)
     * @param baseEnv the instance's environment, on top of which {@code env} is read
     * @param loader where the handler's class loader delegates to (the runtime's)
     * @param callbackClients the callback client of a specialized configuration
     * @param exit ends the process with a failed specialization's code, after its answer
     */
    Specializer(
            RuntimeConfig base,
            Map<String, String> baseEnv,
            ClassLoader loader,
            Environment environment,
            Function<RuntimeConfig, CallbackClient> callbackClients,
            IntConsumer exit) {
        this.base = base;
        this.baseEnv = Map.copyOf(baseEnv);
        this.loader = loader;
        this.environment = environment;
        this.callbackClients = callbackClients;
        this.exit = exit;
    }

    @Override
    public void attach(RuntimeServer server, Executor callbackExecutor, InFlight inFlight) {
        this.server = server;
        this.callbackExecutor = callbackExecutor;
        this.inFlight = inFlight;
    }

    State state() {
        return state.get();
    }

    @Override
    public long requestsSeen() {
        return requestsSeen.get();
    }

    @Override
    public void handle(HttpExchange exchange) {
        requestsSeen.incrementAndGet();
        int exitCode = 0;
        try {
            String path = exchange.getRequestURI().getRawPath();
            String method = exchange.getRequestMethod();
            if (PATH.equals(path)) {
                if ("POST".equals(method)) {
                    exitCode = specialize(exchange);
                } else {
                    methodNotAllowed(exchange, "POST");
                }
                return;
            }
            Endpoints specialized = endpoints;
            if (specialized != null) {
                specialized.handle(exchange);
                return;
            }
            if ("/health".equals(path)) {
                if (!"GET".equals(method) && !"HEAD".equals(method)) {
                    methodNotAllowed(exchange, "GET, HEAD");
                } else if (state.get() == State.FAILED) {
                    respond(exchange, 503, Endpoints.errorBody(STARTUP_ERROR, failure));
                } else {
                    respond(exchange, 200, "{\"status\":\"ok\"}".getBytes(StandardCharsets.UTF_8));
                }
            } else if ("/invoke".equals(path)) {
                if ("POST".equals(method)) {
                    String why = state.get() == State.FAILED ? failure : "not specialized";
                    respond(exchange, 503, Endpoints.errorBody(STARTUP_ERROR, why));
                } else {
                    methodNotAllowed(exchange, "POST");
                }
            } else {
                respond(
                        exchange,
                        404,
                        Endpoints.simpleError(
                                "no route "
                                        + path
                                        + " (routes: GET /health, POST /invoke, POST "
                                        + PATH
                                        + ")"));
            }
        } catch (IOException e) {
            Log.debug("connection error: " + e);
        } catch (RuntimeException | Error e) {
            Log.warn("unexpected failure serving " + exchange.getRequestURI(), e);
            try {
                respond(exchange, 500, Endpoints.errorBody(Endpoints.INTERNAL, HandlerLoader.describe(e)));
            } catch (IOException | RuntimeException ignored) {
                // Headers may already be sent; the connection is closed below.
            }
        } finally {
            exchange.close();
            if (exitCode != 0) {
                exit.accept(exitCode);
            }
        }
    }

    /** Serves {@code POST /_nanofaas/specialize}; returns the exit code to end with, or 0. */
    private int specialize(HttpExchange exchange) throws IOException {
        if (!state.compareAndSet(State.GENERIC, State.SPECIALIZING)) {
            respond(
                    exchange,
                    409,
                    Endpoints.errorBody(
                            ALREADY_SPECIALIZED,
                            "this instance was already specialized (state "
                                    + state.get().name().toLowerCase(java.util.Locale.ROOT)
                                    + "); a prewarmed instance is specialized once"));
            return 0;
        }
        Request request;
        try {
            byte[] body = readBody(exchange, base.maxBodyBytes());
            if (body == null) {
                state.set(State.GENERIC);
                respond(
                        exchange,
                        413,
                        Endpoints.simpleError(
                                "request body larger than MAX_BODY_BYTES=" + base.maxBodyBytes()));
                return 0;
            }
            request = parse(body);
        } catch (BadRequest e) {
            state.set(State.GENERIC);
            respond(exchange, 400, Endpoints.simpleError(e.getMessage()));
            return 0;
        } catch (IOException | RuntimeException | Error e) {
            state.set(State.GENERIC);
            throw e;
        }
        String mismatch = launcherMismatch(request.env());
        if (mismatch != null) {
            state.set(State.GENERIC);
            respond(exchange, 501, Endpoints.errorBody(NOT_SPECIALIZABLE, mismatch));
            return 0;
        }
        long start = System.nanoTime();
        String handlerName;
        try {
            handlerName = apply(request);
        } catch (StartupException e) {
            return fail(exchange, e.getMessage(), e.exitCode());
        } catch (RuntimeException | Error e) {
            return fail(
                    exchange,
                    "the handler cannot be loaded: " + HandlerLoader.describe(e),
                    StartupException.EXIT_HANDLER);
        }
        double loadMs = Math.round((System.nanoTime() - start) / 1000.0) / 1000.0;
        Log.info(
                "specialized"
                        + (request.function() == null ? "" : " for function " + request.function())
                        + " handler="
                        + handlerName
                        + " in "
                        + loadMs
                        + " ms");
        ObjectNode answer = JsonNodeFactory.instance.objectNode();
        answer.put("specialized", true);
        answer.put("loadMs", loadMs);
        respond(exchange, 200, Json.MAPPER.writeValueAsBytes(answer));
        return 0;
    }

    /** Why {@code env} cannot be applied to this running JVM, or null when it can. */
    private String launcherMismatch(Map<String, String> env) {
        for (String name : LAUNCHER_ENV) {
            if (!env.containsKey(name)) {
                continue; // on top of the instance's environment, as in a normal start
            }
            String given = blankToNull(env.get(name));
            String own = blankToNull(baseEnv.get(name));
            if (!java.util.Objects.equals(given, own)) {
                return name
                        + (given == null ? " unset" : "=" + given)
                        + " differs from this prewarmed JVM's ("
                        + (own == null ? "unset" : own)
                        + "): it is read before the JVM runs any code; start this function cold";
            }
        }
        return null;
    }

    private static String blankToNull(String v) {
        return v == null || v.isBlank() ? null : v.trim();
    }

    private int fail(HttpExchange exchange, String message, int code) throws IOException {
        failure = message;
        state.set(State.FAILED);
        // The same line a normal start prints before exiting with the same code.
        System.err.println("nanofaas-java-runtime: " + message);
        System.err.flush();
        respond(exchange, 500, Endpoints.errorBody(STARTUP_ERROR, message));
        return code;
    }

    /**
     * Makes the instance the function's (steps 1-4 of the class comment).
     *
     * @return the handler's class name
     */
    private String apply(Request request) throws StartupException {
        Map<String, String> merged = new HashMap<>(baseEnv);
        merged.remove(PREWARM_ENV);
        merged.remove(WARMUP_ENV);
        merged.putAll(request.env());
        Map<String, String> set = new LinkedHashMap<>(request.env());
        // The instance listens already: its HOST and PORT stay (as the platform's PORT wins over
        // a spec's in a normal start).
        for (String fixed : List.of("HOST", "PORT")) {
            String given = request.env().get(fixed);
            String own = baseEnv.get(fixed);
            if (given != null && !given.equals(own)) {
                Log.warn(
                        "specialization env "
                                + fixed
                                + "="
                                + given
                                + " ignored: the prewarmed instance listens on "
                                + base.host()
                                + ":"
                                + server.port());
                set.remove(fixed);
                if (own == null) {
                    merged.remove(fixed);
                } else {
                    merged.put(fixed, own);
                }
            }
        }
        RuntimeConfig config = RuntimeConfig.fromEnv(merged);
        environment.set(set);
        for (String internal : List.of(PREWARM_ENV, WARMUP_ENV)) {
            if (!request.env().containsKey(internal)) {
                environment.unset(internal);
            }
        }
        if (request.workingDir() != null) {
            System.setProperty("user.dir", request.workingDir().toString());
        }
        Log.setLevel(config.logLevel());
        ClassLoader handlerLoader =
                config.handlerClasspath() == null
                        ? loader
                        : HandlerClassLoader.forClasspath(
                                config.handlerClasspath(), request.workingDir(), loader);
        FunctionHandler handler = HandlerLoader.load(config.handlerClass(), handlerLoader);
        Endpoints routes =
                new Endpoints(
                        config, handler, callbackClients.apply(config), callbackExecutor, inFlight);
        server.specialized(config);
        endpoints = routes;
        state.set(State.SPECIALIZED);
        return HandlerLoader.handlerClass(handler).getName();
    }

    /**
     * {@code {"function": string?, "env": {string: string}, "workingDir": absolute path?,
     * "timeoutMs": positive integer?}}; other fields are ignored.
     */
    static Request parse(byte[] body) throws BadRequest {
        JsonNode root;
        try {
            root = Json.MAPPER.readTree(body);
        } catch (IOException e) {
            throw new BadRequest("invalid JSON body: " + firstLine(e.getMessage()));
        } catch (StackOverflowError e) {
            throw new BadRequest("invalid JSON body: nested too deeply");
        }
        if (root == null || root.isMissingNode()) {
            throw new BadRequest("empty body: expected {\"function\": ..., \"env\": {...}, ...}");
        }
        if (!root.isObject()) {
            throw new BadRequest(
                    "the body must be a JSON object {\"function\": ..., \"env\": {...},"
                            + " \"workingDir\": ..., \"timeoutMs\": ...}");
        }
        JsonNode functionNode = root.get("function");
        String function = null;
        if (functionNode != null && !functionNode.isNull()) {
            if (!functionNode.isTextual()) {
                throw new BadRequest("\"function\" must be a string");
            }
            function = functionNode.textValue();
        }
        JsonNode envNode = root.get("env");
        if (envNode == null || !envNode.isObject()) {
            throw new BadRequest("\"env\" must be an object of strings (it may be empty)");
        }
        Map<String, String> env = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = envNode.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> field = it.next();
            String name = field.getKey();
            if (name.isEmpty() || name.indexOf('=') >= 0 || name.indexOf('\0') >= 0) {
                throw new BadRequest(
                        "env: invalid variable name '"
                                + name.replace("\0", "\\0")
                                + "' (empty, or contains '=' or NUL)");
            }
            if (!field.getValue().isTextual()) {
                throw new BadRequest("env." + name + " must be a string");
            }
            String value = field.getValue().textValue();
            if (value.indexOf('\0') >= 0) {
                throw new BadRequest("env." + name + " contains NUL");
            }
            env.put(name, value);
        }
        JsonNode dirNode = root.get("workingDir");
        Path workingDir = null;
        if (dirNode != null && !dirNode.isNull()) {
            if (!dirNode.isTextual()) {
                throw new BadRequest("\"workingDir\" must be a string");
            }
            String dir = dirNode.textValue();
            try {
                workingDir = Paths.get(dir);
            } catch (InvalidPathException e) {
                throw new BadRequest("\"workingDir\" " + quote(dir) + " is not a path");
            }
            if (!workingDir.isAbsolute()) {
                throw new BadRequest("\"workingDir\" " + quote(dir) + " must be absolute");
            }
            if (!Files.isDirectory(workingDir)) {
                throw new BadRequest("\"workingDir\" " + quote(dir) + " is not a folder");
            }
            workingDir = workingDir.normalize();
        }
        JsonNode timeout = root.get("timeoutMs");
        if (timeout != null && !timeout.isNull()) {
            if (!timeout.canConvertToExactIntegral()
                    || !timeout.canConvertToLong()
                    || timeout.longValue() < 1) {
                throw new BadRequest("\"timeoutMs\" must be a positive integer");
            }
        }
        return new Request(function, env, workingDir);
    }

    private static String quote(String s) {
        return "'" + s.replace("\0", "\\0") + "'";
    }

    private static String firstLine(String s) {
        if (s == null) {
            return "unreadable";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    /** The body, or null when it is larger than {@code max}. */
    private static byte[] readBody(HttpExchange exchange, int max) throws IOException {
        try (InputStream in = exchange.getRequestBody()) {
            byte[] body = in.readNBytes(max);
            if (body.length == max && in.read() != -1) {
                return null;
            }
            return body;
        }
    }

    private static void methodNotAllowed(HttpExchange exchange, String allow) throws IOException {
        exchange.getResponseHeaders().set("Allow", allow);
        respond(
                exchange,
                405,
                Endpoints.simpleError(
                        exchange.getRequestMethod()
                                + " is not allowed on "
                                + exchange.getRequestURI().getRawPath()
                                + " (allowed: "
                                + allow
                                + ")"));
    }

    private static void respond(HttpExchange exchange, int status, byte[] body) throws IOException {
        Endpoints.respond(exchange, status, body);
    }

    /** The JSON of a specialization request (the warm-up's and the tests'). */
    static String body(String function, Map<String, String> env, String workingDir) {
        ObjectNode node = JsonNodeFactory.instance.objectNode();
        node.put("function", function);
        ObjectNode e = node.putObject("env");
        env.forEach(e::put);
        if (workingDir != null) {
            node.put("workingDir", workingDir);
        }
        node.put("timeoutMs", 10000);
        try {
            return Json.MAPPER.writeValueAsString(node);
        } catch (IOException ex) {
            throw new IllegalStateException("a tree of strings always serialises", ex);
        }
    }
}
