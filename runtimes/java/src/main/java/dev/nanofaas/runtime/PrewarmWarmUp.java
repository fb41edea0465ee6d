package dev.nanofaas.runtime;

import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * What a prewarmed runtime does before it answers {@code /health}: it runs its own code paths so
 * that their classes are loaded and initialised and the hot methods compiled, and a
 * specialization pays for the function's own classes only.
 *
 * <ol>
 *   <li>the specialization path: a request parsed, a handler class loader over the runtime's own
 *       jar, the registration lookup, a handler class defined from a jar and instantiated
 *       through the function API's adapter (a built-in handler, {@link WarmUpHandler});
 *   <li>the request path: a private server on a loopback port with that handler, sent {@code
 *       requests} invocations (and a few health checks and malformed bodies) on one kept-alive
 *       connection, then stopped.
 * </ol>
 *
 * Nothing of the function's runs here, and nothing reads the environment a specialization will
 * change (the handler's {@code FunctionLog} is not touched). A failure is logged and not fatal:
 * it would surface, with its cause, on first use.
 */
final class PrewarmWarmUp {

    /** Invocations sent by default ({@code NANOFAAS_PREWARM_WARMUP}); measured in the README. */
    static final int DEFAULT_REQUESTS = 300;

    /** The built-in handler; loaded from the runtime's jar in a handler class loader. */
    public static final class WarmUpHandler implements dev.nanofaas.function.FunctionHandler {
        @Override
        public Object handle(dev.nanofaas.function.Request request) {
            Map<String, Object> in = request.inputObject();
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("greeting", "Hello, " + in.get("name") + "!");
            out.put("n", in.get("n"));
            out.put("metadata", request.metadata());
            // A lambda of a class in a handler class loader is spun at run time (the AppCDS
            // archive holds none for it), as a handler's own lambdas are.
            java.util.function.Supplier<Object> n = () -> in.get("n");
            out.put("again", n.get());
            return out;
        }
    }

    /**
     * First uses in the JDK that handlers commonly make and that cost milliseconds each the first
     * time (measured on the java-hello example): the process handle (a thread pool and lambdas in
     * its static initializer), {@code invokedynamic} string concatenation (javac's default, whose
     * method handles are spun at run time), reading a resource of a jar through a {@code jar:} URL
     * (the registration lookup's path when a handler registers itself).
     */
    static void jdkFirstUses(HandlerClassLoader isolated) throws Throwable {
        ProcessHandle.current().pid();
        java.lang.invoke.MethodHandles.Lookup lookup = java.lang.invoke.MethodHandles.lookup();
        Class<?>[][] shapes = {
            {String.class},
            {String.class, String.class},
            {Object.class},
            {int.class},
            {long.class},
            {String.class, int.class},
            {String.class, long.class},
            {String.class, Object.class},
            {double.class},
            {boolean.class},
        };
        for (Class<?>[] shape : shapes) {
            java.lang.invoke.MethodType type =
                    java.lang.invoke.MethodType.methodType(String.class, shape);
            String recipe = "<" + "\u0001,".repeat(shape.length) + ">";
            java.lang.invoke.MethodHandle concat =
                    java.lang.invoke.StringConcatFactory.makeConcatWithConstants(
                                    lookup, "concat", type, recipe)
                            .dynamicInvoker();
            Object[] args = new Object[shape.length];
            for (int i = 0; i < shape.length; i++) {
                args[i] = sample(shape[i]);
            }
            concat.invokeWithArguments(args);
        }
        java.net.URL manifest = isolated.getResource("META-INF/MANIFEST.MF");
        if (manifest != null) {
            try (java.io.BufferedReader r =
                    new java.io.BufferedReader(
                            new java.io.InputStreamReader(
                                    manifest.openStream(), StandardCharsets.UTF_8))) {
                while (r.readLine() != null) {
                    // read it all, as ServiceLoader reads a registration
                }
            }
        }
    }

    private static Object sample(Class<?> type) {
        if (type == int.class) {
            return 1;
        } else if (type == long.class) {
            return 2L;
        } else if (type == double.class) {
            return 1.5;
        } else if (type == boolean.class) {
            return true;
        }
        return "s";
    }

    private PrewarmWarmUp() {}

    /**
     * Runs the warm-up; returns the number of invocations answered 200 (a warm-up that could not
     * run is logged and answers less).
     */
    static int run(int requests, ClassLoader runtimeLoader) {
        try {
            RuntimeServer.warmUpJson();
            Path jar =
                    Paths.get(
                            PrewarmWarmUp.class
                                    .getProtectionDomain()
                                    .getCodeSource()
                                    .getLocation()
                                    .toURI());
            try (HandlerClassLoader isolated =
                    HandlerClassLoader.forClasspath(jar.toString(), null, runtimeLoader)) {
                FunctionHandler handler = specializationPath(jar, isolated, runtimeLoader);
                jdkFirstUses(isolated);
                return requestPath(handler, requests);
            }
        } catch (Throwable e) {
            Log.warn("prewarm warm-up failed (not fatal): " + HandlerLoader.describe(e));
            return 0;
        } finally {
            // The warm-up's garbage grew the heap: collect it, so that the serial collector gives
            // the memory back and the idle instance holds what a cold one would (measured).
            System.gc();
        }
    }

    private static FunctionHandler specializationPath(
            Path jar, HandlerClassLoader isolated, ClassLoader runtimeLoader)
            throws StartupException, Specializer.BadRequest, IOException {
        Specializer.parse(
                Specializer.body(
                                "warm-up",
                                Map.of("FUNCTION_HANDLER", WarmUpHandler.class.getName(), "K", "v"),
                                jar.getParent().toString())
                        .getBytes(StandardCharsets.UTF_8));
        RuntimeConfig.fromEnv(Map.of("PORT", "0", "FUNCTION_HANDLER", WarmUpHandler.class.getName()));
        try (HandlerClassLoader registered =
                HandlerClassLoader.forClasspath(jar.getFileName().toString(), jar.getParent(), runtimeLoader)) {
            HandlerLoader.load(null, registered);
        } catch (StartupException expected) {
            // the runtime's jar registers no handler: the lookup's path all the same
        }
        return HandlerLoader.load(WarmUpHandler.class.getName(), isolated);
    }

    private static int requestPath(FunctionHandler handler, int requests)
            throws StartupException, IOException {
        if (requests <= 0) {
            return 0;
        }
        RuntimeConfig config = RuntimeConfig.fromEnv(Map.of("HOST", "127.0.0.1", "PORT", "0"));
        CallbackClient callbacks =
                new CallbackClient(null, config.callbackAttempts(), config.callbackTimeout());
        RuntimeServer server = RuntimeServer.start(config, handler, callbacks);
        int ok = 0;
        try (Socket socket = new Socket(InetAddress.getLoopbackAddress(), server.port())) {
            socket.setTcpNoDelay(true);
            socket.setSoTimeout(10_000);
            OutputStream out = socket.getOutputStream();
            InputStream in = new BufferedInputStream(socket.getInputStream());
            for (int i = 0; i < requests; i++) {
                if (i % 50 == 0) {
                    send(out, "GET", "/health", "w", null);
                    readResponse(in);
                    send(out, "POST", "/invoke", "w", "{\"input\": [1,");
                    readResponse(in);
                }
                String body =
                        "{\"input\":{\"name\":\"Ada\",\"n\":"
                                + i
                                + ",\"l\":[1.5,true,null,\"x\"]},\"metadata\":{\"k\":\"v\"}}";
                send(out, "POST", "/invoke", "warm-" + i, body);
                if (readResponse(in) == 200) {
                    ok++;
                }
            }
        } finally {
            server.shutdown();
        }
        return ok;
    }

    private static void send(OutputStream out, String method, String path, String id, String body)
            throws IOException {
        byte[] bytes = body == null ? new byte[0] : body.getBytes(StandardCharsets.UTF_8);
        String head =
                method
                        + " "
                        + path
                        + " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Execution-Id: "
                        + id
                        + "\r\nX-Trace-Id: t-"
                        + id
                        + "\r\nContent-Type: application/json\r\nContent-Length: "
                        + bytes.length
                        + "\r\n\r\n";
        out.write(head.getBytes(StandardCharsets.US_ASCII));
        out.write(bytes);
        out.flush();
    }

    /** Reads one response (status line, headers, a Content-Length body); returns the status. */
    private static int readResponse(InputStream in) throws IOException {
        ByteArrayOutputStream head = new ByteArrayOutputStream(256);
        int state = 0;
        while (state < 4) {
            int b = in.read();
            if (b < 0) {
                throw new IOException("the warm-up server closed the connection");
            }
            head.write(b);
            state = (b == '\r' && (state == 0 || state == 2)) || (b == '\n' && (state == 1 || state == 3))
                    ? state + 1
                    : (b == '\r' ? 1 : 0);
            if (head.size() > 64 * 1024) {
                throw new IOException("the warm-up server's response headers are too long");
            }
        }
        String[] lines = head.toString(StandardCharsets.US_ASCII).split("\r\n");
        int status = Integer.parseInt(lines[0].split(" ")[1]);
        long length = 0;
        for (String line : lines) {
            int colon = line.indexOf(':');
            if (colon > 0 && line.substring(0, colon).trim().equalsIgnoreCase("Content-Length")) {
                length = Long.parseLong(line.substring(colon + 1).trim());
            }
        }
        in.skipNBytes(length);
        return status;
    }
}
