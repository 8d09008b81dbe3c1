namespace SiteLink;

/// <summary>Base type of every error the SiteLink SDK raises about the tunnel itself.</summary>
public class TunnelException : Exception
{
    /// <summary>Creates an exception with a message.</summary>
    public TunnelException(string message) : base(message) { }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public TunnelException(string message, Exception? innerException) : base(message, innerException) { }

    /// <summary>Creates an exception with a message, the error that caused it, and what kind of failure it is.</summary>
    public TunnelException(string message, Exception? innerException, TunnelError tunnelError) : base(message, innerException)
    {
        _tunnelError = tunnelError;
    }

    private readonly TunnelError? _tunnelError;

    /// <summary>
    /// What kind of failure this is, for code that must act on it (a service's exit code, an alert, advice to a
    /// user), as <see cref="System.Net.Http.HttpRequestException.HttpRequestError"/> does for HTTP.
    /// </summary>
    public TunnelError TunnelError => _tunnelError ?? DefaultError;

    /// <summary>The kind of failure when the constructor named none.</summary>
    private protected virtual TunnelError DefaultError => TunnelError.Unknown;

    /// <summary>
    /// Whether retrying the same operation later may succeed (network failure, relay restarting).
    /// <see langword="false"/> for errors that only a configuration change fixes (bad token, denied name).
    /// </summary>
    public virtual bool IsTransient => false;
}

/// <summary>The relay rejected the authtoken: it is missing, unknown or revoked. Retrying does not help.</summary>
public sealed class TunnelAuthenticationException : TunnelException
{
    /// <summary>Creates the exception.</summary>
    public TunnelAuthenticationException(string message, Exception? innerException = null) : base(message, innerException) { }

    private protected override TunnelError DefaultError => TunnelError.AuthenticationFailed;
}

/// <summary>The relay refused something the agent asked for (a limit, a version, a permission). Retrying does not help.</summary>
public sealed class TunnelPermissionException : TunnelException
{
    /// <summary>Creates the exception (<see cref="TunnelError.PermissionDenied"/>).</summary>
    public TunnelPermissionException(string message) : base(message, null, TunnelError.PermissionDenied) { }

    /// <summary>Creates the exception with the error that caused it (<see cref="TunnelError.PermissionDenied"/>).</summary>
    public TunnelPermissionException(string message, Exception? innerException) : base(message, innerException, TunnelError.PermissionDenied) { }

    /// <summary>Creates the exception, saying what kind of refusal it is (e.g. <see cref="TunnelError.VersionNotSupported"/>).</summary>
    public TunnelPermissionException(string message, Exception? innerException, TunnelError tunnelError) : base(message, innerException, tunnelError) { }
}

/// <summary>
/// The relay refuses this agent's SiteLink SDK version: it requires <see cref="MinimumVersion"/> or later (the relay's
/// <c>MinimumAgentVersion</c>). Retrying does not help; updating the agent does. <see cref="TunnelException.TunnelError"/>
/// is <see cref="TunnelError.VersionNotSupported"/>.
/// </summary>
public sealed class TunnelVersionException : TunnelException
{
    /// <summary>Creates the exception; its message names both versions.</summary>
    /// <param name="agentVersion">The SDK version this agent runs.</param>
    /// <param name="minimumVersion">The oldest SDK version the relay accepts; empty when it did not say.</param>
    /// <param name="innerException">The error that carried the refusal.</param>
    public TunnelVersionException(string agentVersion, string minimumVersion, Exception? innerException = null)
        : base(MessageFor(agentVersion ?? "", minimumVersion ?? ""), innerException, TunnelError.VersionNotSupported)
    {
        AgentVersion = agentVersion ?? "";
        MinimumVersion = minimumVersion ?? "";
    }

    /// <summary>The SDK version this agent runs.</summary>
    public string AgentVersion { get; }

    /// <summary>The oldest SDK version the relay accepts; empty when the relay did not say.</summary>
    public string MinimumVersion { get; }

    private static string MessageFor(string agentVersion, string minimumVersion) => minimumVersion.Length == 0
        ? $"The relay requires a newer SiteLink SDK; this agent runs {agentVersion}. Update the agent."
        : $"The relay requires SiteLink SDK {minimumVersion} or later; this agent runs {agentVersion}. Update the agent.";
}

/// <summary>
/// The relay could not be reached or the connection to it failed: DNS, TCP, an HTTP proxy on the way, TLS (including an
/// untrusted or mismatched certificate), HTTP/2, or the control stream ended.
/// </summary>
public sealed class TunnelConnectionException : TunnelException
{
    /// <summary>Creates a transient exception (<see cref="TunnelError.ConnectionFailed"/>).</summary>
    public TunnelConnectionException(string message) : this(message, null, isTransient: true, TunnelError.ConnectionFailed) { }

    /// <summary>Creates a transient exception with the error that caused it (<see cref="TunnelError.ConnectionFailed"/>).</summary>
    public TunnelConnectionException(string message, Exception? innerException) : this(message, innerException, isTransient: true, TunnelError.ConnectionFailed) { }

    /// <summary>Creates the exception, saying whether retrying may help (<see cref="TunnelError.ConnectionFailed"/>).</summary>
    public TunnelConnectionException(string message, Exception? innerException, bool isTransient) : this(message, innerException, isTransient, TunnelError.ConnectionFailed) { }

    /// <summary>Creates the exception, saying whether retrying may help and what kind of failure it is (e.g. <see cref="TunnelError.CertificateRejected"/>).</summary>
    public TunnelConnectionException(string message, Exception? innerException, bool isTransient, TunnelError tunnelError)
        : base(message, innerException, tunnelError)
    {
        _isTransient = isTransient;
    }

    private readonly bool _isTransient;

    /// <inheritdoc />
    public override bool IsTransient => _isTransient;
}

/// <summary>The relay sent something this SDK does not understand, or out of order.</summary>
public sealed class TunnelProtocolException : TunnelException
{
    /// <summary>Creates the exception.</summary>
    public TunnelProtocolException(string message, Exception? innerException = null) : base(message, innerException) { }

    private protected override TunnelError DefaultError => TunnelError.ProtocolError;
}

/// <summary>What kind of failure a <see cref="TunnelException"/> is. New values may be added.</summary>
public enum TunnelError
{
    /// <summary>None of the kinds below.</summary>
    Unknown = 0,

    /// <summary>The relay could not be reached or the connection to it failed (DNS, TCP, HTTP/2, a timeout, a lost connection).</summary>
    ConnectionFailed,

    /// <summary>The relay's TLS certificate is not trusted: it does not match the pin, or its chain does not validate.</summary>
    CertificateRejected,

    /// <summary>The relay rejected the authtoken: missing, unknown or revoked.</summary>
    AuthenticationFailed,

    /// <summary>
    /// The relay does not accept this agent's version: it does not speak this SDK's protocol version, or it requires a
    /// newer SDK (<see cref="TunnelVersionException"/>).
    /// </summary>
    VersionNotSupported,

    /// <summary>The relay refused the session or a request: a permission or a limit.</summary>
    PermissionDenied,

    /// <summary>The relay broke the protocol.</summary>
    ProtocolError,

    /// <summary>
    /// The HTTP proxy on the way to the relay (<see cref="TunnelSessionOptions.Proxy"/> or <c>HTTPS_PROXY</c>) could not be
    /// reached, or refused or failed to open the tunnel; the message says which, with the proxy's answer.
    /// </summary>
    ProxyFailed,

    /// <summary>The HTTP proxy on the way to the relay requires authentication the agent did not give, or rejected its credentials.</summary>
    ProxyAuthenticationFailed,
}
