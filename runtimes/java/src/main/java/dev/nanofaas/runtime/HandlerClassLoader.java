package dev.nanofaas.runtime;

import java.io.IOException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Enumeration;
import java.util.List;

/**
 * The class loader of the handler's jars ({@code HANDLER_CLASSPATH}): child-first, so that the
 * handler's own libraries win over anything of the runtime's, and isolated: besides its own jars
 * it sees only the JDK (the platform class loader) and the function API ({@code
 * dev.nanofaas.function}, from the runtime's loader, so that the handler's {@code FunctionHandler}
 * is the runtime's).
 *
 * <p>For handlers written against the runtime's own older interface ({@code
 * dev.nanofaas.runtime.FunctionHandler}, whose types are Jackson's), that interface and its
 * request and result types also come from the runtime (no other class of the runtime's), and Jackson ({@code com.fasterxml.jackson}) from the runtime only
 * when the handler's jars do not have the class: a handler that bundles its own Jackson always gets
 * its own.
 */
final class HandlerClassLoader extends URLClassLoader {

    static {
        registerAsParallelCapable();
    }

    private static final String API = "dev.nanofaas.function.";
    /** The runtime's older handler interface and its types (nothing else of the runtime's). */
    private static final java.util.Set<String> LEGACY_API =
            java.util.Set.of(
                    "dev.nanofaas.runtime.FunctionHandler",
                    "dev.nanofaas.runtime.InvocationRequest",
                    "dev.nanofaas.runtime.InvocationResult",
                    "dev.nanofaas.runtime.InvocationResult$ErrorInfo");
    private static final String JACKSON = "com.fasterxml.jackson.";

    private final ClassLoader runtime;

    HandlerClassLoader(URL[] urls, ClassLoader runtime) {
        super("nanofaas-handler", urls, ClassLoader.getPlatformClassLoader());
        this.runtime = runtime;
    }

    /**
     * The loader for {@code HANDLER_CLASSPATH} ({@code :}-separated jars and directories; an entry
     * {@code dir/*} is every jar in {@code dir}).
     *
     * @throws StartupException when an entry does not exist
     */
    static HandlerClassLoader forClasspath(String classpath, ClassLoader runtime)
            throws StartupException {
        return forClasspath(classpath, null, runtime);
    }

    /**
     * The same, relative entries resolved against {@code base} (a specialized prewarmed runtime's
     * {@code workingDir}; null: the process's working directory).
     */
    static HandlerClassLoader forClasspath(String classpath, Path base, ClassLoader runtime)
            throws StartupException {
        List<URL> urls = new ArrayList<>();
        for (String entry : classpath.split(":")) {
            if (entry.isBlank()) {
                continue;
            }
            try {
                if (entry.endsWith("/*") || entry.equals("*")) {
                    Path dir = resolve(base, entry.substring(0, entry.length() - 1));
                    if (!Files.isDirectory(dir)) {
                        throw missing(entry);
                    }
                    List<Path> jars = new ArrayList<>();
                    try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, "*.{jar,JAR}")) {
                        ds.forEach(jars::add);
                    }
                    Collections.sort(jars);
                    for (Path jar : jars) {
                        urls.add(jar.toAbsolutePath().toUri().toURL());
                    }
                } else {
                    Path p = resolve(base, entry);
                    if (!Files.exists(p)) {
                        throw missing(entry);
                    }
                    urls.add(p.toAbsolutePath().toUri().toURL());
                }
            } catch (IOException | InvalidPathException e) {
                throw new StartupException(
                        StartupException.EXIT_HANDLER,
                        "HANDLER_CLASSPATH entry '" + entry + "': " + HandlerLoader.describe(e));
            }
        }
        return new HandlerClassLoader(urls.toArray(new URL[0]), runtime);
    }

    private static Path resolve(Path base, String entry) {
        Path p = Paths.get(entry);
        return base == null ? p : base.resolve(p);
    }

    private static StartupException missing(String entry) {
        return new StartupException(
                StartupException.EXIT_HANDLER,
                "HANDLER_CLASSPATH entry '" + entry + "' does not exist");
    }

    @Override
    protected Class<?> loadClass(String name, boolean resolve) throws ClassNotFoundException {
        synchronized (getClassLoadingLock(name)) {
            Class<?> c = findLoadedClass(name);
            if (c == null) {
                if (name.startsWith(API) || LEGACY_API.contains(name)) {
                    c = runtime.loadClass(name);
                } else {
                    c = fromJdk(name);
                    if (c == null) {
                        try {
                            c = findClass(name);
                        } catch (ClassNotFoundException e) {
                            if (!name.startsWith(JACKSON)) {
                                throw e;
                            }
                            c = runtime.loadClass(name);
                        }
                    }
                }
            }
            if (resolve) {
                resolveClass(c);
            }
            return c;
        }
    }

    private Class<?> fromJdk(String name) {
        try {
            return getParent().loadClass(name);
        } catch (ClassNotFoundException e) {
            return null;
        }
    }

    @Override
    public URL getResource(String name) {
        URL own = findResource(name);
        return own != null ? own : super.getResource(name);
    }

    @Override
    public Enumeration<URL> getResources(String name) throws IOException {
        // Own first, then the JDK's (the parent's): never the runtime's.
        List<URL> all = Collections.list(findResources(name));
        all.addAll(Collections.list(getParent().getResources(name)));
        return Collections.enumeration(all);
    }
}
