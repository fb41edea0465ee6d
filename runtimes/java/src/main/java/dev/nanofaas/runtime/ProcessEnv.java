package dev.nanofaas.runtime;

import java.lang.reflect.Field;
import java.lang.reflect.InaccessibleObjectException;
import java.util.Map;

/**
 * Writes variables into the JVM's own view of its environment, so that {@code System.getenv()}
 * and {@code System.getenv(name)} in a handler loaded afterwards, and the processes it starts
 * ({@code ProcessBuilder}), see them. Used only by a prewarmed runtime's specialization.
 *
 * <p>The JDK reads the environment once, at startup, into a map it hands out unmodifiable: {@code
 * System.getenv()} is a {@code java.util.Collections$UnmodifiableMap} over a writable view of that
 * map. This class reaches the writable view through the wrapper's field {@code m}, which needs
 * {@value #ADD_OPENS} on the JVM's command line (the launcher adds it with {@code
 * NANOFAAS_PREWARM=1}). The C library's environment ({@code getenv(3)} of native code) is not
 * changed: the JDK offers no way to without native code.
 */
final class ProcessEnv implements Specializer.Environment {

    /** The JVM option this needs. */
    static final String ADD_OPENS = "--add-opens java.base/java.util=ALL-UNNAMED";

    private final Map<String, String> writable;

    private ProcessEnv(Map<String, String> writable) {
        this.writable = writable;
    }

    /**
     * Reaches the writable view, checking that it is one.
     *
     * @throws StartupException ({@link StartupException#EXIT_CONFIG}) when the JVM does not allow
     *     it (no {@value #ADD_OPENS}) or the JDK's classes are not shaped as expected
     */
    @SuppressWarnings("unchecked")
    static ProcessEnv open() throws StartupException {
        Map<String, String> env = System.getenv();
        Class<?> type = env.getClass();
        if (!type.getName().equals("java.util.Collections$UnmodifiableMap")) {
            throw unsupported("System.getenv() is a " + type.getName());
        }
        Map<String, String> inner;
        try {
            Field m = type.getDeclaredField("m");
            m.setAccessible(true);
            inner = (Map<String, String>) m.get(env);
        } catch (InaccessibleObjectException e) {
            throw new StartupException(
                    StartupException.EXIT_CONFIG,
                    "NANOFAAS_PREWARM=1 needs the JVM option "
                            + ADD_OPENS
                            + " (bin/nanofaas-java-runtime adds it): "
                            + HandlerLoader.describe(e));
        } catch (ReflectiveOperationException | RuntimeException e) {
            throw unsupported(HandlerLoader.describe(e));
        }
        // Prove it writable now, not at the first specialization: rewrite a variable as it is.
        try {
            String probe = "NANOFAAS_PREWARM";
            String value = inner.get(probe);
            if (value == null) {
                inner.remove(probe);
            } else {
                inner.put(probe, value);
            }
        } catch (RuntimeException e) {
            throw unsupported("the environment map is not writable: " + HandlerLoader.describe(e));
        }
        return new ProcessEnv(inner);
    }

    private static StartupException unsupported(String why) {
        return new StartupException(
                StartupException.EXIT_CONFIG,
                "NANOFAAS_PREWARM=1: this JVM's environment cannot be updated (" + why + ")");
    }

    @Override
    public void set(Map<String, String> vars) {
        writable.putAll(vars);
    }

    @Override
    public void unset(String name) {
        writable.remove(name);
    }
}
