using System.Net;
using System.Net.Sockets;

namespace SiteLink.Bench;

internal static class EchoServer
{
    private static int s_accepted;
    private static int s_open;

    /// <summary>Echoes every byte. With <paramref name="stats"/>, prints "accepted N open M" once a second (bench/hostile.py counts upstream connections).</summary>
    public static async Task<int> RunAsync(int port, bool stats = false)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, port));
        listener.Listen(4096);
        if (stats)
        {
            _ = Task.Run(async () =>
            {
                while (true)
                {
                    Console.WriteLine($"accepted {Volatile.Read(ref s_accepted)} open {Volatile.Read(ref s_open)}");
                    await Task.Delay(1000);
                }
            });
        }

        while (true)
        {
            var client = await listener.AcceptAsync();
            Interlocked.Increment(ref s_accepted);
            _ = EchoAsync(client);
        }
    }

    private static async Task EchoAsync(Socket client)
    {
        Interlocked.Increment(ref s_open);
        using (client)
        {
            var buffer = new byte[16 * 1024];
            try
            {
                int read;
                while ((read = await client.ReceiveAsync(buffer, SocketFlags.None)) > 0)
                {
                    await client.SendAsync(buffer.AsMemory(0, read), SocketFlags.None);
                }

                client.Shutdown(SocketShutdown.Send);
            }
            catch (SocketException)
            {
            }
            finally
            {
                Interlocked.Decrement(ref s_open);
            }
        }
    }
}
