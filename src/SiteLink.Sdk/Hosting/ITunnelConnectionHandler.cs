namespace SiteLink;

/// <summary>
/// Serves the connections of an in-process endpoint declared with
/// <c>AddSiteLink().AddConnectionHandler&lt;THandler&gt;(name)</c>. Resolved from dependency injection once per
/// connection, in a scope of its own that is disposed when the connection ends.
/// </summary>
public interface ITunnelConnectionHandler
{
    /// <summary>
    /// Serves one connection. The connection closes gracefully when the returned task completes; an exception aborts
    /// it (the public client sees a reset) and is logged.
    /// </summary>
    /// <param name="connection">The duplex stream and who connected.</param>
    /// <param name="cancellationToken">Signalled when the session closes past its drain deadline or the connection is aborted.</param>
    Task HandleAsync(TunnelConnection connection, CancellationToken cancellationToken);
}
