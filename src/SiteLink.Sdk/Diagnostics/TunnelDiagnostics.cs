using System.Net;
using SiteLink.Diagnostics;
using SiteLink.Protocol;

namespace SiteLink;

/// <summary>
/// Checks the way from this machine to the relay step by step, as a session would take it, and says in plain words what
/// is wrong: for the customer's administrator when an agent does not connect, and for the vendor's support.
/// </summary>
public static class TunnelDiagnostics
{
    /// <summary>
    /// Runs the diagnosis for every relay the options name: DNS, TCP, the proxy's CONNECT (when a proxy is used), the
    /// TLS handshake with the session's own trust, HTTP/2, the authtoken (the real handshake, Hello and Welcome) and a
    /// heartbeat round trip, then closes the connection gracefully. Each step is timed and bounded by
    /// <see cref="TunnelSessionOptions.ConnectTimeout"/> (the heartbeat by <see cref="TunnelSessionOptions.RequestTimeout"/>);
    /// the first failure ends a relay's run (the later steps are reported as skipped). No endpoint is bound.
    /// </summary>
    /// <param name="options">The options a session would run with; they are validated as <see cref="TunnelSession.ConnectAsync"/> does, and not changed.</param>
    /// <param name="cancellationToken">Stops the diagnosis.</param>
    /// <returns>The report. A connectivity problem is reported in it, never thrown.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentException">The options are invalid; the message lists every problem.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public static Task<TunnelDiagnosticReport> RunAsync(TunnelSessionOptions options, CancellationToken cancellationToken = default) =>
        RunAsync(options, static (host, ct) => Dns.GetHostAddressesAsync(host, ct), cancellationToken);

    /// <summary>The same, with the name resolver given (tests resolve names without sending DNS queries).</summary>
    internal static async Task<TunnelDiagnosticReport> RunAsync(TunnelSessionOptions options, Func<string, CancellationToken, Task<IPAddress[]>> resolve, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(resolve);
        TunnelSession.ThrowIfInvalid(options);
        var snapshot = options.Snapshot();
        var time = snapshot.TimeProvider;
        var startedAt = time.GetUtcNow();
        var started = time.GetTimestamp();
        // A client id of its own: the relay's logs tell the diagnosis from the agent's session.
        var clientId = (snapshot.ClientId ?? "agent") + "-diagnose";
        var relays = new List<TunnelRelayDiagnosis>();
        foreach (var url in snapshot.AllRelayUrls)
        {
            relays.Add(await RelayProbe.RunAsync(TunnelSession.LinkOptions(snapshot, url), clientId, resolve, cancellationToken).ConfigureAwait(false));
        }

        return new TunnelDiagnosticReport(ProtocolConstants.SdkVersion, startedAt, time.GetElapsedTime(started), relays.AsReadOnly());
    }
}
