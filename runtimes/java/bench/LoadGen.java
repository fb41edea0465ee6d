import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * Sequential keep-alive load on one connection: POST /invoke with a fixed body, for a warm-up
 * then a measured period; prints one JSON line {requests, rps, p50_us, p99_us, errors}.
 * Bounded: stops after the duration, fails on a non-200 or a dead connection.
 *
 * Usage: java LoadGen.java PORT SECONDS WARMUP_SECONDS BODY
 */
public class LoadGen {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        double seconds = Double.parseDouble(args[1]);
        double warmup = Double.parseDouble(args[2]);
        byte[] body = args[3].getBytes(StandardCharsets.UTF_8);
        byte[] head =
                ("POST /invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                + "X-Execution-Id: bench\r\nContent-Length: " + body.length + "\r\n\r\n")
                        .getBytes(StandardCharsets.US_ASCII);
        ByteArrayOutputStream req = new ByteArrayOutputStream();
        req.write(head);
        req.write(body);
        byte[] request = req.toByteArray();
        try (Socket s = new Socket()) {
            s.setTcpNoDelay(true);
            s.setSoTimeout(10_000);
            s.connect(new InetSocketAddress("127.0.0.1", port), 5_000);
            OutputStream out = s.getOutputStream();
            InputStream in = new BufferedInputStream(s.getInputStream());
            long warmEnd = System.nanoTime() + (long) (warmup * 1e9);
            while (System.nanoTime() < warmEnd) {
                once(out, in, request);
            }
            long[] lat = new long[1 << 22];
            int n = 0;
            long start = System.nanoTime();
            long end = start + (long) (seconds * 1e9);
            long now = start;
            while (now < end && n < lat.length) {
                once(out, in, request);
                long t = System.nanoTime();
                lat[n++] = t - now;
                now = t;
            }
            double elapsed = (now - start) / 1e9;
            long[] sorted = Arrays.copyOf(lat, n);
            Arrays.sort(sorted);
            System.out.printf(
                    "{\"requests\": %d, \"rps\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"errors\": 0}%n",
                    n, n / elapsed, sorted[n / 2] / 1e3, sorted[(int) (n * 0.99)] / 1e3);
        }
    }

    /** One request/response; the response must be 200 with a Content-Length body. */
    private static void once(OutputStream out, InputStream in, byte[] request) throws IOException {
        out.write(request);
        out.flush();
        StringBuilder headers = new StringBuilder();
        int last4 = 0;
        while (last4 != 0x0d0a0d0a) {
            int c = in.read();
            if (c < 0) {
                throw new IOException("connection closed");
            }
            headers.append((char) c);
            last4 = (last4 << 8) | c;
        }
        String h = headers.toString();
        if (!h.startsWith("HTTP/1.1 200")) {
            throw new IOException("unexpected response: " + h.lines().findFirst().orElse(""));
        }
        int len = -1;
        for (String line : h.split("\r\n")) {
            int colon = line.indexOf(':');
            if (colon > 0 && line.substring(0, colon).trim().equalsIgnoreCase("content-length")) {
                len = Integer.parseInt(line.substring(colon + 1).trim());
            }
        }
        if (len < 0) {
            throw new IOException("no Content-Length in " + h);
        }
        if (in.readNBytes(len).length != len) {
            throw new IOException("connection closed mid-body");
        }
    }
}
