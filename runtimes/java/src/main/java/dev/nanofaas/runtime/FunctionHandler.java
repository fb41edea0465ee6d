package dev.nanofaas.runtime;

/**
 * The user's function. The runtime creates exactly one instance at startup (through its public
 * no-argument constructor) and calls {@link #handle} once per invocation, so a handler may keep
 * warm state (clients, caches, parsed configuration) in its fields.
 *
 * <p>With {@code THREADS=1} (the default) invocations never overlap; with more threads the
 * handler must be thread-safe.
 */
@FunctionalInterface
public interface FunctionHandler {

    /**
     * Runs one invocation.
     *
     * @param request the invocation's input and metadata
     * @return the output, serialised as JSON with Jackson ({@code null}, a {@code String}, a
     *     {@code Map}, a record, a POJO, a {@code JsonNode}, ...)
     * @throws Exception any failure: the caller gets HTTP 500 with code {@code HANDLER_ERROR} and
     *     the exception's message
     */
    Object handle(InvocationRequest request) throws Exception;
}
