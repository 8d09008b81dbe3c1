namespace SiteLink;

/// <summary>
/// The steps of a <see cref="TunnelDiagnostics"/> run for one relay, with the proxy the agent goes through to reach it.
/// A <see cref="TunnelDiagnosticReport"/> has one for each relay the options name.
/// </summary>
/// <remarks>Immutable. It holds no secret: the proxy's address is shown without user information.</remarks>
public sealed class TunnelRelayDiagnosis
{
    internal TunnelRelayDiagnosis(Uri relayUrl, Uri? proxyAddress, string? proxySource, TimeSpan duration, IReadOnlyList<TunnelDiagnosticStep> steps)
    {
        RelayUrl = relayUrl;
        ProxyAddress = proxyAddress;
        ProxySource = proxySource;
        Duration = duration;
        Steps = steps;
    }

    /// <summary>The relay's agent address, as the options name it.</summary>
    public Uri RelayUrl { get; }

    /// <summary>
    /// The HTTP proxy on the way to this relay (never with its credentials), or <see langword="null"/> when the agent
    /// connects directly.
    /// </summary>
    public Uri? ProxyAddress { get; }

    /// <summary>
    /// Where the proxy was named: <c>Proxy.Address</c> or an environment variable such as <c>HTTPS_PROXY</c>;
    /// <see langword="null"/> without a proxy.
    /// </summary>
    public string? ProxySource { get; }

    /// <summary>How long this relay's steps took.</summary>
    public TimeSpan Duration { get; }

    /// <summary>The steps, in the order they ran; after a failed one, the rest are <see cref="TunnelDiagnosticVerdict.Skipped"/>.</summary>
    public IReadOnlyList<TunnelDiagnosticStep> Steps { get; }

    /// <summary>Whether no step failed (warnings and steps that do not apply allowed): the agent can connect to this relay.</summary>
    public bool Succeeded => FailedStep is null;

    /// <summary>The step that failed (there is at most one: the steps after it are skipped), or <see langword="null"/>.</summary>
    public TunnelDiagnosticStep? FailedStep => Steps.FirstOrDefault(s => s.Verdict == TunnelDiagnosticVerdict.Failed);
}
