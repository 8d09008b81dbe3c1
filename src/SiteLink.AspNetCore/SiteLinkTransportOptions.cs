namespace SiteLink.AspNetCore;

/// <summary>
/// Settings of the SiteLink transport for Kestrel (<c>builder.WebHost.UseSiteLink(options => ...)</c>). Read once,
/// when Kestrel creates the transport.
/// </summary>
public sealed class SiteLinkTransportOptions
{
    private TimeSpan _bindTimeout = TimeSpan.FromSeconds(10);
    private int _maxReadBufferSize = 1024 * 1024;
    private int _maxWriteBufferSize = 64 * 1024;

    /// <summary>
    /// The session whose endpoints Kestrel listens on. Default: null, the <see cref="ITunnelSession"/> registered in the
    /// application's services (<c>builder.Services.AddSiteLink()</c>); the server then fails to start, saying so, when none is.
    /// </summary>
    public ITunnelSession? Session { get; set; }

    /// <summary>
    /// How long the server's start waits for the relay to accept an endpoint while the session is still connecting.
    /// Default: 10 seconds. Within it a refusal (<see cref="TunnelBindException"/>) or a session fault fails the start;
    /// past it the server starts anyway (a warning is logged) and the endpoint is bound once the session connects.
    /// <see cref="TimeSpan.Zero"/>: never wait. <see cref="Timeout.InfiniteTimeSpan"/>: wait until bound or refused.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative (other than <see cref="Timeout.InfiniteTimeSpan"/>).</exception>
    public TimeSpan BindTimeout
    {
        get => _bindTimeout;
        set
        {
            if (value < TimeSpan.Zero && value != Timeout.InfiniteTimeSpan)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "BindTimeout must be zero or more, or Timeout.InfiniteTimeSpan.");
            }

            _bindTimeout = value;
        }
    }

    /// <summary>
    /// The most bytes received from a public client that one connection buffers before Kestrel reads them; past it the
    /// connection stops reading from the tunnel (the relay and the client then wait). Default: 1 MiB, as Kestrel's sockets.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Zero or negative.</exception>
    public int MaxReadBufferSize
    {
        get => _maxReadBufferSize;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(value);
            _maxReadBufferSize = value;
        }
    }

    /// <summary>
    /// The most bytes of a response that one connection buffers before they are sent into the tunnel; past it Kestrel's
    /// writes wait. Default: 64 KiB, as Kestrel's sockets.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Zero or negative.</exception>
    public int MaxWriteBufferSize
    {
        get => _maxWriteBufferSize;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(value);
            _maxWriteBufferSize = value;
        }
    }
}
