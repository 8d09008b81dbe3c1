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

    /// <summary>
    /// Creates a connection that lives in memory, for unit tests of a <see cref="TunnelConnectionHandler"/> or an
    /// <see cref="ITunnelConnectionHandler"/>: give <see cref="InMemoryConnectionPair.Connection"/> to the handler and
    /// play the public client with <see cref="InMemoryConnectionPair.Client"/>, a <see cref="TunnelStream"/> too. The
    /// connection behaves as a tunnelled one: either end's <see cref="TunnelStream.CompleteWritesAsync"/> gives the other
    /// the end of the stream (reads return 0) while it can still write; <see cref="TunnelStream.Abort"/> on either end
    /// makes the other's reads and writes fail with an <see cref="IOException"/>; an end that stops reading eventually
    /// stops the other's writes; every frame's bytes are copied when written. As through the tunnel, disposing an end
    /// closes it gracefully: it waits (up to 10 s) for the other end's end of the stream, so have the client call
    /// <see cref="TunnelStream.CompleteWritesAsync"/> (or dispose the pair, which closes both ends together).
    /// </summary>
    /// <param name="info">Who the handler sees as connected. Default: endpoint <c>test</c>, client 127.0.0.1:50000.</param>
    public static InMemoryConnectionPair CreateInMemory(TunnelConnectionInfo? info = null)
    {
        var tunnel = new Bridging.InMemoryTunnel(maxFrameSize: 64 * 1024, closeTimeout: TimeSpan.FromSeconds(10));
        var connection = new TunnelConnection(
            info ?? new TunnelConnectionInfo("test", new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 50000), null, "in-memory"),
            tunnel.Agent);
        return new InMemoryConnectionPair(connection, tunnel.Client);
    }
}

/// <summary>
/// Both ends of an in-memory tunnelled connection (<see cref="TunnelConnection.CreateInMemory"/>). Disposing it closes
/// both ends gracefully, together.
/// </summary>
public sealed class InMemoryConnectionPair : IAsyncDisposable
{
    internal InMemoryConnectionPair(TunnelConnection connection, TunnelStream client)
    {
        Connection = connection;
        Client = client;
    }

    /// <summary>The connection, as the SDK hands it to a handler.</summary>
    public TunnelConnection Connection { get; }

    /// <summary>
    /// The public client's end: what it writes the connection reads, what the connection writes it reads (0 at the end
    /// of the stream). <see cref="TunnelStream.CompleteWritesAsync"/> is the client shutting down its sending side.
    /// </summary>
    public TunnelStream Client { get; }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        // Together: each end's graceful close waits for the other's end of the stream.
        var client = Client.DisposeAsync().AsTask();
        var connection = Connection.DisposeAsync().AsTask();
        await Task.WhenAll(client, connection).ConfigureAwait(false);
    }
}
