package dev.nanofaas.runtime;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Modifier;
import java.util.List;
import java.util.ServiceConfigurationError;
import java.util.ServiceLoader;
import java.util.stream.Collectors;

/**
 * Chooses and instantiates the user's handler, once, before the server listens.
 *
 * <ol>
 *   <li>{@code FUNCTION_HANDLER} names a class: that class, whatever else is registered.
 *   <li>Otherwise the providers of {@code FunctionHandler} registered with {@link ServiceLoader}
 *       ({@code META-INF/services/dev.nanofaas.runtime.FunctionHandler}): exactly one must exist.
 *       None, or several, is a startup error naming what was found.
 * </ol>
 *
 * Every failure is a {@link StartupException} with a one-line message saying what to fix.
 */
final class HandlerLoader {

    static final String SERVICE_FILE = "META-INF/services/" + FunctionHandler.class.getName();

    private HandlerLoader() {}

    static FunctionHandler load(String handlerClass, ClassLoader loader) throws StartupException {
        return handlerClass != null ? loadNamed(handlerClass, loader) : loadRegistered(loader);
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
        if (!FunctionHandler.class.isAssignableFrom(type)) {
            throw failure(what + ": does not implement " + FunctionHandler.class.getName());
        }
        if (type.isInterface() || Modifier.isAbstract(type.getModifiers())) {
            throw failure(what + ": is abstract; name a concrete class");
        }
        if (!Modifier.isPublic(type.getModifiers())) {
            throw failure(what + ": must be a public class");
        }
        try {
            return (FunctionHandler) type.getConstructor().newInstance();
        } catch (NoSuchMethodException e) {
            throw failure(what + ": has no public no-argument constructor");
        } catch (InvocationTargetException e) {
            throw failure(what + ": constructor failed: " + describe(e.getCause()));
        } catch (ReflectiveOperationException | LinkageError | RuntimeException e) {
            throw failure(what + ": cannot be instantiated: " + describe(e));
        }
    }

    private static FunctionHandler loadRegistered(ClassLoader loader) throws StartupException {
        List<ServiceLoader.Provider<FunctionHandler>> providers;
        try {
            providers =
                    ServiceLoader.load(FunctionHandler.class, loader).stream()
                            .collect(Collectors.toList());
        } catch (ServiceConfigurationError e) {
            throw failure("bad handler registration in " + SERVICE_FILE + ": " + describe(e));
        }
        if (providers.isEmpty()) {
            throw failure(
                    "no handler found: set FUNCTION_HANDLER to the class implementing "
                            + FunctionHandler.class.getName()
                            + ", or list it in "
                            + SERVICE_FILE
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
        ServiceLoader.Provider<FunctionHandler> only = providers.get(0);
        try {
            return only.get();
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
