package dev.nanofaas.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.nanofaas.runtime.fixtures.BrokenConstructorHandler;
import dev.nanofaas.runtime.fixtures.EchoHandler;
import dev.nanofaas.runtime.fixtures.OtherHandler;
import java.io.IOException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** FUNCTION_HANDLER first, else exactly one ServiceLoader registration. */
class HandlerLoaderTest {

    @TempDir Path dir;

    private final ClassLoader testLoader = HandlerLoaderTest.class.getClassLoader();

    /** A class loader over the test classes plus a services file listing {@code classes}. */
    private URLClassLoader registering(String... classes) throws IOException {
        Path services = dir.resolve(HandlerLoader.SERVICE_FILE);
        Files.createDirectories(services.getParent());
        Files.writeString(services, "# handlers\n" + String.join("\n", classes) + "\n");
        return new URLClassLoader(new URL[] {dir.toUri().toURL()}, testLoader);
    }

    private static String failure(String handlerClass, ClassLoader loader) {
        StartupException e =
                assertThrows(StartupException.class, () -> HandlerLoader.load(handlerClass, loader));
        assertEquals(StartupException.EXIT_HANDLER, e.exitCode());
        assertTrue(!e.getMessage().contains("\n"), "one line: " + e.getMessage());
        return e.getMessage();
    }

    @Test
    void namedHandlerIsLoaded() throws Exception {
        FunctionHandler h = HandlerLoader.load(EchoHandler.class.getName(), testLoader);
        assertInstanceOf(EchoHandler.class, h);
    }

    @Test
    void namedHandlerWinsOverSeveralRegistered() throws Exception {
        try (URLClassLoader loader =
                registering(EchoHandler.class.getName(), OtherHandler.class.getName())) {
            assertInstanceOf(OtherHandler.class, HandlerLoader.load(OtherHandler.class.getName(), loader));
        }
    }

    @Test
    void singleRegisteredHandlerIsLoaded() throws Exception {
        try (URLClassLoader loader = registering(OtherHandler.class.getName())) {
            assertInstanceOf(OtherHandler.class, HandlerLoader.load(null, loader));
        }
    }

    @Test
    void severalRegisteredWithoutANameIsAnErrorListingThem() throws Exception {
        try (URLClassLoader loader =
                registering(OtherHandler.class.getName(), EchoHandler.class.getName())) {
            String m = failure(null, loader);
            assertTrue(m.contains("several handlers found"), m);
            assertTrue(
                    m.contains(EchoHandler.class.getName() + ", " + OtherHandler.class.getName()), m);
            assertTrue(m.contains("FUNCTION_HANDLER"), m);
        }
    }

    @Test
    void noneRegisteredIsAnError() {
        String m = failure(null, testLoader);
        assertTrue(m.contains("no handler found"), m);
        assertTrue(m.contains("FUNCTION_HANDLER"), m);
    }

    @Test
    void badRegistrationIsAnError() throws Exception {
        try (URLClassLoader loader = registering("com.example.Missing")) {
            String m = failure(null, loader);
            assertTrue(m.contains("bad handler registration"), m);
            assertTrue(m.contains("com.example.Missing"), m);
        }
    }

    @Test
    void registeredHandlerWhoseConstructorFailsIsAnError() throws Exception {
        try (URLClassLoader loader = registering(BrokenConstructorHandler.class.getName())) {
            String m = failure(null, loader);
            assertTrue(m.contains("database unreachable"), m);
        }
    }

    @Test
    void namedHandlerProblemsAreExplained() {
        String p = "dev.nanofaas.runtime.fixtures.";
        assertTrue(failure("com.example.Nope", testLoader).contains("class not found"));
        assertTrue(failure(p + "NotAHandler", testLoader).contains("does not implement"));
        assertTrue(failure(p + "AbstractHandler", testLoader).contains("abstract"));
        assertTrue(failure(p + "NoDefaultConstructorHandler", testLoader).contains("no public no-argument constructor"));
        String broken = failure(p + "BrokenConstructorHandler", testLoader);
        assertTrue(broken.contains("constructor failed") && broken.contains("database unreachable"), broken);
    }
}
