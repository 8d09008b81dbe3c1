using System.Diagnostics;
using System.Net.Sockets;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A well-behaved agent of another tenant (globex, cloud endpoint "globex-echo" → an echo service), connected before an
/// attack, to prove that what one tenant does leaves the others served: verified bytes, bounded latency.
/// </summary>
internal sealed class GoodAgent : IAsyncDisposable
{
    public const string CloudEndpoint = "globex-echo";

    /// <summary>The slowest a 1-byte round trip may be while the relay is under attack (loopback, a busy 2-core machine).</summary>
    public static readonly TimeSpan MaxRoundTrip = TimeSpan.FromSeconds(2);

    private readonly TestRelay _relay;
    private readonly TestUpstream _upstream;

    private GoodAgent(TestRelay relay, TestUpstream upstream, ITunnelSession session)
    {
        _relay = relay;
        _upstream = upstream;
        Session = session;
    }

    public ITunnelSession Session { get; }

    public static async Task<GoodAgent> StartAsync(TestRelay relay)
    {
        var upstream = TestUpstream.Echo();
        var session = await relay.ConnectAgentAsync(TestRelay.GlobexToken);
        await session.ForwardAsync(CloudEndpoint, upstream.Uri).DefaultTimeout();
        return new GoodAgent(relay, upstream, session);
    }

    /// <summary>
    /// One public connection: a 1-byte round trip (asserted under <see cref="MaxRoundTrip"/>), then
    /// <paramref name="bytes"/> random bytes echoed back identically. Returns the round trip.
    /// </summary>
    public async Task<TimeSpan> AssertServesAsync(int bytes = 256 * 1024)
    {
        using var client = await _relay.ConnectClientAsync(CloudEndpoint);
        var one = new byte[1];
        var watch = Stopwatch.StartNew();
        await client.SendAllAsync(new byte[] { 42 }).DefaultTimeout();
        var read = await client.ReceiveAsync(one.AsMemory(), SocketFlags.None).AsTask().DefaultTimeout();
        var roundTrip = watch.Elapsed;

        var payload = SocketTestExtensions.RandomBytes(bytes);
        var receiving = client.ReadToEndAsync();
        await client.SendAllAsync(payload).DefaultTimeout();
        client.Shutdown(SocketShutdown.Send);
        var echoed = await receiving.DefaultTimeout();

        Assert.Multiple(() =>
        {
            Assert.That(read == 1 && one[0] == 42, Is.True, "the good agent's first byte came back");
            Assert.That(echoed, Is.EqualTo(payload), "the good agent's bytes came back identical");
            Assert.That(roundTrip, Is.LessThan(MaxRoundTrip), "the good agent's round trip stays bounded");
        });
        return roundTrip;
    }

    public async ValueTask DisposeAsync() => await _upstream.DisposeAsync();
}
