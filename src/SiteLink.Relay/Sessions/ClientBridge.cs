using System.Net.Sockets;
using Google.Protobuf;
using Grpc.Core;
using SiteLink.Internal;
using SiteLink.Protocol.V1;

namespace SiteLink.Relay.Sessions;

/// <summary>How a bridged public connection ended.</summary>
internal enum ClientBridgeOutcome
{
    /// <summary>The agent finished the connection; the client saw a clean end of stream.</summary>
    Completed,

    /// <summary>The public client reset or vanished.</summary>
    ClientFailed,

    /// <summary>The agent aborted the stream, or the session ended.</summary>
    AgentFailed,

    /// <summary>Nothing moved either way for the cloud endpoint's idle timeout: the client got a FIN, the agent an error.</summary>
    IdleTimeout,
}

/// <summary>
/// Copies bytes between a public client socket and an agent's Stream call, both directions at once, with half-close:
/// the client's FIN becomes a half_close frame, the agent's half_close a socket shutdown, and the end of the agent's
/// request stream closes the connection. A failure on one side resets the other.
/// </summary>
internal static class ClientBridge
{
    private const int BufferSize = 64 * 1024;

    public static async Task<(ClientBridgeOutcome Outcome, Status? AgentStatus)> RunAsync(
        PublicConnection connection,
        IAsyncStreamReader<DataFrame> fromAgent,
        IServerStreamWriter<DataFrame> toAgent,
        int maxFrameSize,
        Action<long> bytesFromClient,
        Action<long> bytesToClient,
        TimeProvider timeProvider,
        CancellationToken cancellationToken)
    {
        var client = connection.Transport;
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var idle = new IdleWatch(connection.Endpoint.IdleTimeout, timeProvider, () =>
        {
            try
            {
                linked.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // The bridge ended meanwhile.
            }
        });
        var upload = ClientToAgentAsync(client, toAgent, maxFrameSize, n => { idle.Touch(); bytesFromClient(n); }, linked.Token);
        Status? agentStatus = null;
        var download = AgentToClientAsync(fromAgent, client, n => { idle.Touch(); bytesToClient(n); }, status => agentStatus = status, linked.Token);

        ClientBridgeOutcome outcome;
        try
        {
            var first = await Task.WhenAny(upload, download).ConfigureAwait(false);
            if (first == download)
            {
                outcome = await download.ConfigureAwait(false);
                // The agent is finished (or failed): stop reading from the client either way.
                await linked.CancelAsync().ConfigureAwait(false);
                var uploadOutcome = await upload.ConfigureAwait(false);
                if (outcome == ClientBridgeOutcome.Completed && uploadOutcome == ClientBridgeOutcome.ClientFailed)
                {
                    outcome = ClientBridgeOutcome.ClientFailed;
                }
            }
            else
            {
                outcome = await upload.ConfigureAwait(false);
                if (outcome == ClientBridgeOutcome.Completed)
                {
                    // The client half-closed; the agent may still answer.
                    outcome = await download.ConfigureAwait(false);
                }
                else
                {
                    await linked.CancelAsync().ConfigureAwait(false);
                    await download.ConfigureAwait(false);
                }
            }

            if (idle.HasFired && !cancellationToken.IsCancellationRequested)
            {
                outcome = ClientBridgeOutcome.IdleTimeout;
            }

            if (outcome is ClientBridgeOutcome.Completed or ClientBridgeOutcome.IdleTimeout)
            {
                connection.Close();
            }
            else
            {
                connection.Reset();
            }
        }
        catch
        {
            // Whatever failed unexpectedly, the public client is not left open: the reset also ends the other direction.
            connection.Reset();
            throw;
        }

        return (outcome, agentStatus);
    }

    private static async Task<ClientBridgeOutcome> ClientToAgentAsync(IPublicTransport client, IServerStreamWriter<DataFrame> toAgent, int maxFrameSize, Action<long> count, CancellationToken cancellationToken)
    {
        var size = Math.Min(BufferSize, maxFrameSize);
        var dataLikely = false;
        while (true)
        {
            byte[] buffer;
            int read;
            try
            {
                (buffer, read) = await client.ReceivePooledAsync(size, dataLikely, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return ClientBridgeOutcome.Completed;
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
            {
                return ClientBridgeOutcome.ClientFailed;
            }

            // A full read means more is probably waiting: skip the zero-byte wait next time.
            dataLikely = read == size;
            try
            {
                if (read == 0)
                {
                    await toAgent.WriteAsync(new DataFrame { HalfClose = true }, cancellationToken).ConfigureAwait(false);
                    return ClientBridgeOutcome.Completed;
                }

                // Serialised before WriteAsync completes, so the pooled buffer can be returned afterwards.
                await toAgent.WriteAsync(DataFrame.ForData(buffer.AsMemory(0, read)), cancellationToken).ConfigureAwait(false);
                count(read);
            }
            catch (Exception ex) when (ex is OperationCanceledException or InvalidOperationException or IOException or RpcException)
            {
                return cancellationToken.IsCancellationRequested ? ClientBridgeOutcome.Completed : ClientBridgeOutcome.AgentFailed;
            }
            finally
            {
                SocketIo.Return(buffer, read);
            }
        }
    }

    private static async Task<ClientBridgeOutcome> AgentToClientAsync(IAsyncStreamReader<DataFrame> fromAgent, IPublicTransport client, Action<long> count, Action<Status> onAgentError, CancellationToken cancellationToken)
    {
        var sendClosed = false;
        try
        {
            while (await fromAgent.MoveNext(cancellationToken).ConfigureAwait(false))
            {
                var frame = fromAgent.Current;
                if (!frame.Data.IsEmpty)
                {
                    if (sendClosed)
                    {
                        // Data after half_close breaks the protocol; fail the connection rather than guess.
                        return ClientBridgeOutcome.AgentFailed;
                    }

                    try
                    {
                        await client.SendAsync(frame.Data, cancellationToken).ConfigureAwait(false);
                        count(frame.Data.Length);
                        // Only after a completed send: a failed one leaves the buffer to the collector, never to reuse.
                        frame.Release();
                    }
                    catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
                    {
                        return ClientBridgeOutcome.ClientFailed;
                    }
                }

                if (frame.HalfClose && !sendClosed)
                {
                    sendClosed = true;
                    client.ShutdownSend();
                }
            }

            // The agent completed its request stream: it is finished with the connection.
            if (!sendClosed)
            {
                client.ShutdownSend();
            }

            return ClientBridgeOutcome.Completed;
        }
        catch (RpcException ex)
        {
            // E.g. ResourceExhausted for an oversized frame: the agent is told exactly what it did wrong.
            onAgentError(ex.Status);
            return ClientBridgeOutcome.AgentFailed;
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException)
        {
            return ClientBridgeOutcome.AgentFailed;
        }
    }
}
