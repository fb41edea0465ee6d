package dev.nanofaas.function;

/**
 * A nanofaas function written in Java. The runtime creates exactly one instance at startup
 * (through its public no-argument constructor) and calls {@link #handle} once per invocation, so a
 * handler may keep warm state (clients, caches, parsed configuration) in its fields.
 *
 * <p>This interface and {@link Request} and {@link Response} are the whole contract: they use JDK
 * types only. The runtime loads the handler's jars in a class loader of their own that sees this
 * package and the JDK, nothing else of the runtime's: a handler brings its own libraries (its own
 * Jackson version included) and they cannot clash with the runtime's.
 *
 * <p>With {@code THREADS=1} (the default) invocations never overlap; with more threads the handler
 * must be thread-safe.
 *
 * <p>Register the class in {@code META-INF/services/dev.nanofaas.function.FunctionHandler}, or
 * name it in {@code FUNCTION_HANDLER}.
 */
@FunctionalInterface
public interface FunctionHandler {

    /**
     * Runs one invocation.
     *
     * @param request the invocation's input (as JSON text, or parsed into plain Java values),
     *     metadata and ids
     * @return the output: {@code null}, a {@code String}, {@code Number}, {@code Boolean}, a
     *     {@code Map} or {@code List} of those, a record or bean (serialised from its accessors),
     *     or a {@link Response} carrying JSON text made by the handler's own JSON library
     * @throws Exception any failure: the caller gets HTTP 500 with code {@code HANDLER_ERROR} and
     *     the exception's message
     */
    Object handle(Request request) throws Exception;
}
