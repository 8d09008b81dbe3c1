using System.Globalization;

namespace SiteLink;

/// <summary>One step of a <see cref="TunnelDiagnostics"/> run: what was checked, how it went, how long it took, and what to do about a problem.</summary>
/// <remarks>Immutable. Its text holds no secret: never the authtoken or the proxy's password.</remarks>
public sealed class TunnelDiagnosticStep
{
    internal TunnelDiagnosticStep(TunnelDiagnosticStepKind kind, TunnelDiagnosticVerdict verdict, TimeSpan duration, string detail, string? advice, TunnelError? error)
    {
        Kind = kind;
        Verdict = verdict;
        Duration = duration;
        Detail = detail;
        Advice = advice;
        Error = error;
    }

    /// <summary>Which step this is.</summary>
    public TunnelDiagnosticStepKind Kind { get; }

    /// <summary>The step's name for people, e.g. <c>DNS</c>, <c>TCP connect</c>, <c>TLS handshake</c>.</summary>
    public string Name => NameOf(Kind);

    /// <summary>How the step went.</summary>
    public TunnelDiagnosticVerdict Verdict { get; }

    /// <summary>How long the step took; <see cref="TimeSpan.Zero"/> when it was <see cref="TunnelDiagnosticVerdict.Skipped"/>.</summary>
    public TimeSpan Duration { get; }

    /// <summary>
    /// What the step found, in plain words: the addresses a name resolves to, the certificate the relay presented, the
    /// relay's answer; for a failure, what went wrong (text from the network is capped and stripped of control characters).
    /// </summary>
    public string Detail { get; }

    /// <summary>What to do, in plain words, when the step <see cref="TunnelDiagnosticVerdict.Failed"/> or gave a <see cref="TunnelDiagnosticVerdict.Warning"/>; otherwise <see langword="null"/>.</summary>
    public string? Advice { get; }

    /// <summary>
    /// What kind of failure it is (the same <see cref="TunnelError"/> a session would report, e.g. to choose an exit
    /// code) when the step <see cref="TunnelDiagnosticVerdict.Failed"/>; otherwise <see langword="null"/>.
    /// </summary>
    public TunnelError? Error { get; }

    /// <summary>One line: verdict, name, duration and detail, e.g. <c>PASS DNS (3 ms): relay.example resolves to 203.0.113.7</c>.</summary>
    public override string ToString() => $"{VerdictLabel(Verdict)} {Name} ({FormatDuration(Duration)}): {Detail}";

    internal static string NameOf(TunnelDiagnosticStepKind kind) => kind switch
    {
        TunnelDiagnosticStepKind.Dns => "DNS",
        TunnelDiagnosticStepKind.TcpConnect => "TCP connect",
        TunnelDiagnosticStepKind.ProxyConnect => "Proxy CONNECT",
        TunnelDiagnosticStepKind.TlsHandshake => "TLS handshake",
        TunnelDiagnosticStepKind.Http2 => "HTTP/2",
        TunnelDiagnosticStepKind.Authentication => "Authentication",
        TunnelDiagnosticStepKind.Heartbeat => "Heartbeat",
        _ => kind.ToString(),
    };

    internal static string VerdictLabel(TunnelDiagnosticVerdict verdict) => verdict switch
    {
        TunnelDiagnosticVerdict.Passed => "PASS",
        TunnelDiagnosticVerdict.Failed => "FAIL",
        TunnelDiagnosticVerdict.Warning => "WARN",
        _ => "SKIP",
    };

    /// <summary>"850 ms", "1.2 s", "10 s": as a person reads a duration.</summary>
    internal static string FormatDuration(TimeSpan duration) =>
        duration < TimeSpan.FromSeconds(1)
            ? duration.TotalMilliseconds.ToString(duration < TimeSpan.FromMilliseconds(10) ? "0.#" : "0", CultureInfo.InvariantCulture) + " ms"
            : duration.TotalSeconds.ToString("0.#", CultureInfo.InvariantCulture) + " s";
}
