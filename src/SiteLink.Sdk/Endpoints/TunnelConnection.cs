namespace SiteLink;

/// <summary>Who a tunnelled connection came from and which endpoint it was routed to.</summary>
/// <param name="EndpointName">The internal endpoint the relay routed the connection to.</param>
/// <param name="ClientAddress">
/// The public client's address as the relay saw it (an <see cref="System.Net.IPEndPoint"/>, as Kestrel's
/// <c>ConnectionContext.RemoteEndPoint</c>), or <see langword="null"/> when the relay named none it could parse.
/// </param>
/// <param name="ServerName">The TLS server name (SNI) the client asked for, or <see langword="null"/>.</param>
/// <param name="StreamId">The relay's identifier of this connection, for correlating logs.</param>
public sealed record TunnelConnectionInfo(string EndpointName, System.Net.EndPoint? ClientAddress, string? ServerName, string StreamId);

/// <summary>One tunnelled connection: a duplex byte stream to the public client, and who it is.</summary>
public sealed class TunnelConnection : IAsyncDisposable
{
    internal TunnelConnection(TunnelConnectionInfo info, TunnelStream stream)
    {
        Info = info;
        Stream = stream;
    }

    /// <summary>Who connected, and to which endpoint.</summary>
    public TunnelConnectionInfo Info { get; }

    /// <summary>
    /// The bytes of the connection in both directions. Reading returns 0 once the client closed its sending side;
    /// <see cref="TunnelStream.CompleteWritesAsync"/> closes this side's sending direction while reads go on.
    /// </summary>
    public TunnelStream Stream { get; }

    /// <summary>
    /// The same connection as an <see cref="System.IO.Pipelines.IDuplexPipe"/>, for pipe-based handlers (as Kestrel's
    /// <c>ConnectionContext.Transport</c>): completing <c>Output</c> closes this side's sending direction, <c>Input</c>
    /// completes when the client closed its side. Use either this or <see cref="Stream"/> for each direction, not both.
    /// </summary>
    public System.IO.Pipelines.IDuplexPipe Transport =>
        Volatile.Read(ref _transport) ?? Interlocked.CompareExchange(ref _transport, new Bridging.TunnelDuplexPipe(Stream), null) ?? _transport!;

    private System.IO.Pipelines.IDuplexPipe? _transport;

    /// <summary>Closes the connection gracefully: what was written is delivered, then the client sees the end of the stream.</summary>
    public ValueTask DisposeAsync() => Stream.DisposeAsync();
}
