using System.Net;
using System.Net.Sockets;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>What the fixtures that start a real server (redis, nginx, haproxy, the native agent) share.</summary>
internal static class RealServers
{
    /// <summary>
    /// Ends the test because a prerequisite is missing: skipped with <paramref name="message"/> (how to install it), or
    /// failed when SITELINK_REQUIRE_REAL_SERVERS=1 (as .ci/run sets, after installing what the tests need).
    /// </summary>
    public static void Missing(string message)
    {
        if (Environment.GetEnvironmentVariable("SITELINK_REQUIRE_REAL_SERVERS") == "1")
        {
            Assert.Fail(message);
        }

        Assert.Ignore(message);
    }

    /// <summary>A loopback port free right now, for servers that cannot bind port 0 and report it (retry on a race).</summary>
    public static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }
}
