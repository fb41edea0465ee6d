package dev.nanofaas.runtime;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Modifier;
import java.util.ArrayList;
import java.util.List;
import java.util.ServiceConfigurationError;
import java.util.ServiceLoader;
import java.util.stream.Collectors;

/**
 * Chooses and instantiates the user's handler, once, before the server listens. A handler
 * implements the function API's {@code dev.nanofaas.function.FunctionHandler} (recommended: JDK
 * types only, see the function-api jar) or the runtime's older {@code
 * dev.nanofaas.runtime.FunctionHandler} (Jackson types; still loaded).
 *
 * <ol>
 *   <li>{@code FUNCTION_HANDLER} names a class: that class, whatever else is registered.
 *   <li>Otherwise the providers registered with {@link ServiceLoader} ({@code
 *       META-INF/services/dev.nanofaas.function.FunctionHandler}, or the older {@code
 *       META-INF/services/dev.nanofaas.runtime.FunctionHandler}): exactly one must exist in all.
 *       None, or several, is a startup error naming what was found.
 * </ol>
 *
 * The class and its constructor run with {@code loader} as the thread's context class loader.
 * Every failure is a {@link StartupException} with a one-line message saying what to fix.
 */
final class HandlerLoader {

    static final String API_SERVICE_FILE =
            "META-INF/services/" + dev.nanofaas.function.FunctionHandler.class.getName();
    static final String SERVICE_FILE = "META-INF/services/" + FunctionHandler.class.getName();

    private HandlerLoader() {}

    static FunctionHandler load(String handlerClass, ClassLoader loader) throws StartupException {
        Thread thread = Thread.currentThread();
        ClassLoader previous = thread.getContextClassLoader();
        thread.setContextClassLoader(loader);
        try {
            return handlerClass != null ? loadNamed(handlerClass, loader) : loadRegistered(loader);
        } finally {
            thread.setContextClassLoader(previous);
        }
    }

    /** The handler's own class (not the adapter's), for the logs. */
    static Class<?> handlerClass(FunctionHandler handler) {
        return handler instanceof ApiHandler api ? api.targetClass() : handler.getClass();
    }

    private static FunctionHandler adapt(Object instance, ClassLoader loader) {
        return instance instanceof dev.nanofaas.function.FunctionHandler api
                ? new ApiHandler(api, loader)
                : (FunctionHandler) instance;
    }

    private static FunctionHandler loadNamed(String name, ClassLoader loader)
            throws StartupException {
        String what = "FUNCTION_HANDLER=" + name;
        Class<?> type;
        try {
            type = Class.forName(name, false, loader);
        } catch (ClassNotFoundException e) {
            throw failure(what + ": class not found on the classpath (check HANDLER_CLASSPATH)");
        } catch (LinkageError e) {
            throw failure(what + ": class cannot be loaded: " + describe(e));
        }
        if (!dev.nanofaas.function.FunctionHandler.class.isAssignableFrom(type)
                && !FunctionHandler.class.isAssignableFrom(type)) {
            throw failure(
                    what
                            + ": does not implement "
                            + dev.nanofaas.function.FunctionHandler.class.getName()
                            + " (nor the older "
                            + FunctionHandler.class.getName()
                            + ")");
        }
        if (type.isInterface() || Modifier.isAbstract(type.getModifiers())) {
            throw failure(what + ": is abstract; name a concrete class");
        }
        if (!Modifier.isPublic(type.getModifiers())) {
            throw failure(what + ": must be a public class");
        }
        try {
            return adapt(type.getConstructor().newInstance(), loader);
        } catch (NoSuchMethodException e) {
            throw failure(what + ": has no public no-argument constructor");
        } catch (InvocationTargetException e) {
            throw failure(what + ": constructor failed: " + describe(e.getCause()));
        } catch (ReflectiveOperationException | LinkageError | RuntimeException e) {
            throw failure(what + ": cannot be instantiated: " + describe(e));
        }
    }

    private static FunctionHandler loadRegistered(ClassLoader loader) throws StartupException {
        List<ServiceLoader.Provider<?>> providers = new ArrayList<>();
        String file = API_SERVICE_FILE;
        try {
            ServiceLoader.load(dev.nanofaas.function.FunctionHandler.class, loader).stream()
                    .forEach(providers::add);
            file = SERVICE_FILE;
            ServiceLoader.load(FunctionHandler.class, loader).stream().forEach(providers::add);
        } catch (ServiceConfigurationError e) {
            throw failure("bad handler registration in " + file + ": " + describe(e));
        }
        if (providers.isEmpty()) {
            throw failure(
                    "no handler found: set FUNCTION_HANDLER to the class implementing "
                            + dev.nanofaas.function.FunctionHandler.class.getName()
                            + ", or list it in "
                            + API_SERVICE_FILE
                            + " on HANDLER_CLASSPATH");
        }
        if (providers.size() > 1) {
            String names =
                    providers.stream()
                            .map(p -> p.type().getName())
                            .sorted()
                            .collect(Collectors.joining(", "));
            throw failure(
                    "several handlers found ("
                            + names
                            + "): set FUNCTION_HANDLER to the one to run");
        }
        ServiceLoader.Provider<?> only = providers.get(0);
        try {
            return adapt(only.get(), loader);
        } catch (ServiceConfigurationError e) {
            Throwable cause = e.getCause();
            if (cause instanceof InvocationTargetException ite) {
                cause = ite.getCause();
            }
            throw failure(
                    "handler "
                            + only.type().getName()
                            + " cannot be instantiated: "
                            + describe(cause != null ? cause : e));
        } catch (RuntimeException | LinkageError e) {
            throw failure(
                    "handler " + only.type().getName() + " cannot be instantiated: " + describe(e));
        }
    }

    /** {@code Type: message}, on one line. */
    static String describe(Throwable t) {
        if (t instanceof ExceptionInInitializerError && t.getCause() != null) {
            // A static initializer threw: its exception is the cause worth naming.
            return "ExceptionInInitializerError: " + describe(t.getCause());
        }
        String message = t.getMessage();
        String text =
                message == null || message.isBlank()
                        ? t.getClass().getName()
                        : t.getClass().getSimpleName() + ": " + message;
        return text.replace('\n', ' ').replace('\r', ' ');
    }

    private static StartupException failure(String message) {
        return new StartupException(StartupException.EXIT_HANDLER, message);
    }
}
