using Grpc.Core;
using SiteLink.Diagnostics;
using SiteLink.Endpoints;
using SiteLink.Internal;
using SiteLink.Protocol;
using SiteLink.Protocol.V1;

namespace SiteLink;

// Relay messages, parked streams, and serving or refusing the connections the relay offers.
public sealed partial class TunnelSession
{
    private void Dispatch(ConnectionRun run, RelayMessage message)
    {
        switch (message.KindCase)
        {
            case RelayMessage.KindOneofCase.BindResult:
                var result = message.BindResult;
                if (result.Status == BindStatus.Ok && _bindingsById.TryGetValue(result.BindId, out var bound) && !bound.IsClosed)
                {
                    // Marked here, in order, so an OpenStream right behind the result finds the endpoint bound.
                    bound.SetBound(true);
                }

                if (_pendingBinds.TryGetValue(result.BindId, out var answer))
                {
                    answer.TrySetResult(result);
                }

                break;
            case RelayMessage.KindOneofCase.OpenStream:
                // No parked stream was there for it: park more, so the next burst is paired at once.
                run.Parking.Grow();
                EnsureParked(run);
                _ = ServeAsync(run, message.OpenStream);
                break;
            case RelayMessage.KindOneofCase.Heartbeat:
                run.Connection.Send(new AgentMessage { HeartbeatAck = new HeartbeatAck { Sequence = message.Heartbeat.Sequence } });
                break;
            case RelayMessage.KindOneofCase.Drain:
                SessionLog.DrainRequested(_logger, message.Drain.Reason);
                run.End($"the relay is draining: {message.Drain.Reason}", new TunnelConnectionException("The relay asked the agent to reconnect elsewhere."),
                    drain: true, drainDeadline: TimeSpan.FromMilliseconds(message.Drain.DeadlineMs));
                break;
            case RelayMessage.KindOneofCase.Error:
                SessionLog.RelayError(_logger, message.Error.Code.ToString(), message.Error.Message);
                break;
            default:
                // HeartbeatAck (handled by the run), UnbindResult and messages of later protocol versions need no action.
                break;
        }
    }

    /// <summary>Keeps the run's parked data streams at their target, so new connections are paired without a round trip.</summary>
    private void EnsureParked(ConnectionRun run)
    {
        while (!_stopping.IsCancellationRequested && run.TryReserveParked())
        {
            AsyncDuplexStreamingCall<DataFrame, DataFrame> call;
            try
            {
                call = run.Connection.OpenParked(run.SessionId, run.Connection.Lifetime);
            }
            catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException or RpcException)
            {
                run.OnParkedDone();
                return;
            }

            _ = WaitParkedAsync(run, call);
        }
    }

    private async Task WaitParkedAsync(ConnectionRun run, AsyncDuplexStreamingCall<DataFrame, DataFrame> call)
    {
        OpenStream? open = null;
        try
        {
            if (await call.ResponseStream.MoveNext(run.Connection.Lifetime).ConfigureAwait(false))
            {
                open = call.ResponseStream.Current.Open;
            }
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException or IOException or InvalidOperationException)
        {
            // The relay released it (session ending, limit) or the connection died: it is not parked again here.
        }

        run.OnParkedDone();
        if (open is null)
        {
            call.Dispose();
            return;
        }

        // Replace it before serving, so the next connection finds a parked stream too.
        EnsureParked(run);
        await ServeAsync(run, open, call).ConfigureAwait(false);
    }

    private async Task ServeAsync(ConnectionRun run, OpenStream message, AsyncDuplexStreamingCall<DataFrame, DataFrame>? parkedCall = null)
    {
        // Leave the read loop at once; serving (connecting upstream, bridging) happens here.
        await Task.Yield();
        if (!_bindingsById.TryGetValue(message.BindId, out var binding) || !binding.IsBound || _stopping.IsCancellationRequested
            || !string.Equals(binding.Name, message.EndpointName, StringComparison.OrdinalIgnoreCase))
        {
            SessionLog.UnknownBind(_logger, message.StreamId, message.BindId);
            _telemetry.OnRefused(message.EndpointName, "unknown_endpoint");
            Refuse(run, message, parkedCall, StreamRefusal.UnknownEndpoint, $"no endpoint is bound with id {message.BindId}");
            return;
        }

        var info = new TunnelConnectionInfo(binding.Name, message.ClientAddress, string.IsNullOrEmpty(message.Sni) ? null : message.Sni, message.StreamId);
        SessionLog.ConnectionOpened(_logger, message.StreamId, message.ClientAddress, binding.Name);
        var telemetry = new ConnectionTelemetry(_telemetry, Options.TimeProvider, info, (outcome, duration) =>
            Raise(ConnectionClosed, new TunnelConnectionEventArgs(info, outcome switch
            {
                "completed" => TunnelConnectionOutcome.Completed,
                "refused" => TunnelConnectionOutcome.Refused,
                _ => TunnelConnectionOutcome.Aborted,
            }, duration)));
        Raise(ConnectionOpened, new TunnelConnectionEventArgs(info, null, TimeSpan.Zero));
        var offer = new Offer(run, message, info, telemetry, parkedCall);
        await binding.ServeAsync(offer, _aborting.Token).ConfigureAwait(false);
    }

    /// <summary>Opens the data stream for an offer on the connection it came from; null (and logged) when that connection is gone.</summary>
    internal TunnelStream? TryOpenStream(Offer offer)
    {
        var run = offer.Run;
        if (run.HasEnded && !run.IsDraining)
        {
            SessionLog.StreamOpenFailed(_logger, offer.StreamId, offer.Info.EndpointName, "the connection to the relay is closed");
            offer.Telemetry.End("refused");
            return null;
        }

        _activeConnections.Increment();
        run.Streams.Increment();
        try
        {
            void Released()
            {
                run.Streams.Decrement();
                _activeConnections.Decrement();
            }

            // A parked stream is already open and paired at the relay: an abort resets it, nothing else to say.
            var stream = offer.ParkedCall is { } parked
                ? run.Connection.WrapStream(parked, null, Released)
                : run.Connection.OpenStream(run.SessionId, offer.StreamId, () => Refuse(run, offer.Message, null, StreamRefusal.Aborted, "aborted by the agent"), Released, run.Connection.Lifetime);
            stream.Telemetry = offer.Telemetry;
            return stream;
        }
        catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException or RpcException)
        {
            run.Streams.Decrement();
            _activeConnections.Decrement();
            offer.Telemetry.End("refused");
            SessionLog.StreamOpenFailed(_logger, offer.StreamId, offer.Info.EndpointName, ex.Message);
            return null;
        }
    }

    internal void RefuseUpstreamUnavailable(Offer offer, EndpointBinding binding, string reason)
    {
        SessionLog.UpstreamConnectFailed(_logger, binding.Name, binding.Upstream ?? "", offer.StreamId, reason);
        offer.Telemetry.End("refused");
        Refuse(offer.Run, offer.Message, offer.ParkedCall, StreamRefusal.UpstreamUnavailable, $"endpoint '{binding.Name}': upstream unreachable ({reason})");
    }

    internal void RefuseOverloaded(Offer offer, string endpointName)
    {
        SessionLog.ListenerBacklogFull(_logger, endpointName, offer.StreamId);
        offer.Telemetry.End("refused");
        Refuse(offer.Run, offer.Message, offer.ParkedCall, StreamRefusal.Overloaded, $"endpoint '{endpointName}': listener backlog full");
    }

    /// <summary>
    /// Refuses an offer over the control stream. A parked stream it came on is released once the relay, having read the
    /// refusal, ends it (or after StreamCloseTimeout): resetting it first could overtake the refusal.
    /// </summary>
    private void Refuse(ConnectionRun run, OpenStream offer, AsyncDuplexStreamingCall<DataFrame, DataFrame>? parkedCall, StreamRefusal reason, string message)
    {
        run.Connection.Send(new AgentMessage { StreamRefused = new StreamRefused { StreamId = offer.StreamId, Reason = reason, Message = message } });
        if (parkedCall is not null)
        {
            _ = ReleaseRefusedAsync(parkedCall);
        }
    }

    private async Task ReleaseRefusedAsync(AsyncDuplexStreamingCall<DataFrame, DataFrame> call)
    {
        using var timeout = new CancellationTokenSource(Options.StreamCloseTimeout, Options.TimeProvider);
        try
        {
            while (await call.ResponseStream.MoveNext(timeout.Token).ConfigureAwait(false))
            {
                call.ResponseStream.Current.Release();
            }
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException or IOException or InvalidOperationException)
        {
            // Ended by the relay (expected) or timed out.
        }
        finally
        {
            call.Dispose();
        }
    }

    internal void OnHandlerFailed(Offer offer, Exception exception) =>
        SessionLog.HandlerFailed(_logger, offer.Info.EndpointName, offer.StreamId, exception);

    internal void OnConnectionClosed(Offer offer, BridgeResult result) =>
        SessionLog.ConnectionClosed(_logger, offer.StreamId, offer.Info.EndpointName, result);
}
