namespace SiteLink;

/// <summary>Base type of every error the SiteLink SDK raises about the tunnel itself.</summary>
public class TunnelException : Exception
{
    /// <summary>Creates an exception with a message.</summary>
    public TunnelException(string message) : base(message) { }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public TunnelException(string message, Exception? innerException) : base(message, innerException) { }

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
}

/// <summary>The relay refused something the agent asked for (a limit, a version, a permission). Retrying does not help.</summary>
public sealed class TunnelPermissionException : TunnelException
{
    /// <summary>Creates the exception.</summary>
    public TunnelPermissionException(string message, Exception? innerException = null) : base(message, innerException) { }
}

/// <summary>
/// The relay could not be reached or the connection to it failed: DNS, TCP, TLS (including an
/// untrusted or mismatched certificate), HTTP/2, or the control stream ended.
/// </summary>
public sealed class TunnelConnectionException : TunnelException
{
    /// <summary>Creates the exception.</summary>
    public TunnelConnectionException(string message, Exception? innerException = null, bool isTransient = true)
        : base(message, innerException)
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
}
