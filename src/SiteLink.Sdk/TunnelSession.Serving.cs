using Grpc.Core;
using SiteLink.Diagnostics;
using SiteLink.Endpoints;
using SiteLink.Internal;
using SiteLink.Protocol;
using SiteLink.Protocol.V1;
using SiteLink.Resilience;

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
            case RelayMessage.KindOneofCase.UnbindResult:
                if (_pendingUnbinds.TryGetValue(message.UnbindResult.BindId, out var unbound))
                {
                    unbound.TrySetResult();
                }

                break;
            case RelayMessage.KindOneofCase.OpenStream:
                // No parked stream was there for it: park more, so the next burst is paired at once (unless the
                // session's connections are multiplexed: the offer came before the data call was attached).
                if (run.Mux is null)
                {
                    run.Parking.Grow();
                    EnsureParked(run);
                }

                _ = ServeAsync(run, message.OpenStream);
                break;
            case RelayMessage.KindOneofCase.Heartbeat:
                run.Connection.Send(new AgentMessage { HeartbeatAck = new HeartbeatAck { Sequence = message.Heartbeat.Sequence } });
                break;
            case RelayMessage.KindOneofCase.Drain:
                var drainReason = SafeText.Clean(message.Drain.Reason);
                SessionLog.DrainRequested(_logger, drainReason);
                run.End($"the relay is draining: {drainReason}", new TunnelConnectionException("The relay asked the agent to reconnect elsewhere."),
                    drain: true, drainDeadline: TimeSpan.FromMilliseconds(message.Drain.DeadlineMs));
                break;
            case RelayMessage.KindOneofCase.Error:
                if (_offerLog.ShouldLog(OfferEvent.RelayError, out var errorsHeld))
                {
                    SessionLog.RelayError(_logger, message.Error.Code.ToString(), SafeText.Clean(message.Error.Message), errorsHeld);
                }

                break;
            default:
                // HeartbeatAck (handled by the run) and messages of later protocol versions need no action.
                break;
        }
    }

    /// <summary>
    /// Opens the session's multiplexed data call (protocol version 2): every connection the relay opens on it is served
    /// like an offer on a parked stream. Nobody awaits the call's read loop; when the call ends while the connection to
    /// the relay lives, connections go by parked Stream calls again.
    /// </summary>
    private void StartMultiplexed(ConnectionRun run)
    {
        AsyncDuplexStreamingCall<MuxBatch, MuxBatch> call;
        try
        {
            call = run.Connection.OpenMux(run.SessionId, run.Connection.Lifetime);
        }
        catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException or RpcException)
        {
            EnsureParked(run);
            return;
        }

        var window = MuxSettings.ClampWindow(run.Connection.Welcome.Limits.MuxWindow);
        var mux = new Multiplexer(
            call.RequestStream,
            new MuxSettings(ProtocolConstants.MuxWindow, window, ProtocolConstants.DefaultMaxFrameSize, ProtocolConstants.MuxBufferBudget, Options.MaxConcurrentConnections * 2),
            opens: false)
        {
            Accepted = (connection, open) => _ = ServeAsync(run, open, AsCall(connection)),
            ProtocolError = detail =>
            {
                if (_offerLog.ShouldLog(OfferEvent.RelayError, out var held))
                {
                    SessionLog.RelayError(_logger, "multiplexing", SafeText.Clean(detail), held);
                }
            },
        };
        run.Mux = mux;
        _ = RunMultiplexedAsync(run, mux, call);
    }

    private async Task RunMultiplexedAsync(ConnectionRun run, Multiplexer mux, AsyncDuplexStreamingCall<MuxBatch, MuxBatch> call)
    {
        try
        {
            await mux.RunAsync(call.ResponseStream, run.Connection.Lifetime).ConfigureAwait(false);
        }
        finally
        {
            run.Mux = null;
            call.Dispose();
            if (!run.HasEnded && !_stopping.IsCancellationRequested)
            {
                EnsureParked(run);
            }
        }
    }

    /// <summary>A multiplexed connection as the call a parked stream would have been: the same code serves both.</summary>
    private static AsyncDuplexStreamingCall<DataFrame, DataFrame> AsCall(MuxConnection connection) =>
        new(connection, connection, Task.FromResult(new Metadata()), static () => Status.DefaultSuccess, static () => new Metadata(), connection.Dispose);

    /// <summary>Keeps the run's parked data streams at their target, so new connections are paired without a round trip.</summary>
    private void EnsureParked(ConnectionRun run)
    {
        while (!_stopping.IsCancellationRequested && run.Mux is null && run.TryReserveParked())
        {
            AsyncDuplexStreamingCall<DataFrame, DataFrame> call;
            try
            {
                call = run.Connection.OpenParked(run.SessionId, run.Connection.Lifetime);
            }
#pragma warning disable CA1031 // Whatever stopped the call from opening, nothing is parked: its place is given back.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                run.OnParkedDone();
                if (ex is not (InvalidOperationException or ObjectDisposedException or RpcException))
                {
                    TryLog(() => SessionLog.UnexpectedFailure(_logger, "parking a stream", ex));
                }

                return;
            }

            _ = WaitParkedAsync(run, call);
        }
    }

    /// <summary>Waits for the relay to pair a parked stream with a connection, then serves it; nobody awaits it.</summary>
    private async Task WaitParkedAsync(ConnectionRun run, AsyncDuplexStreamingCall<DataFrame, DataFrame> call)
    {
        var done = false;
        try
        {
            await WaitParkedCoreAsync(run, call, () => done = true).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Nobody awaits this task: every failure is handled here.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            if (!done)
            {
                // It no longer waits: give its place back so another is parked, and release the call.
                run.OnParkedDone();
                call.Dispose();
            }

            TryLog(() => SessionLog.UnexpectedFailure(_logger, "waiting on a parked stream", ex));
        }
    }

    private async Task WaitParkedCoreAsync(ConnectionRun run, AsyncDuplexStreamingCall<DataFrame, DataFrame> call, Action onDone)
    {
        OpenStream? open = null;
        var parkedAt = Options.TimeProvider.GetTimestamp();
        var released = false;
        try
        {
            if (await call.ResponseStream.MoveNext(run.Connection.Lifetime).ConfigureAwait(false))
            {
                open = call.ResponseStream.Current.Open;
            }
            else
            {
                released = true;
            }
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException or IOException or InvalidOperationException)
        {
            // The relay refused it (limit) or the connection died: it is not parked again here.
        }

        run.OnParkedDone();
        onDone();
        if (open is null)
        {
            call.Dispose();
            // The relay ends a parked stream that waited its lifetime out: park another in its place. One it ends at once
            // is not replaced until the next offer, so a relay cannot keep the agent opening streams in a loop.
            if (released && Options.TimeProvider.GetElapsedTime(parkedAt) >= ParkedReplaceMinimumAge)
            {
                EnsureParked(run);
            }

            return;
        }

        // Replace it before serving, so the next connection finds a parked stream too.
        EnsureParked(run);
        await ServeAsync(run, open, call).ConfigureAwait(false);
    }

    /// <summary>The endpoint tag of connections refused before an endpoint was found.</summary>
    private const string UnknownEndpointTag = "(unknown)";

    /// <summary>Ids of at most 64 characters without control characters, as every relay gives them.</summary>
    private static bool IsWellFormed(OpenStream message) =>
        message.StreamId.Length is > 0 and <= SafeText.MaxIdLength
        && message.BindId.Length <= SafeText.MaxIdLength
        && message.EndpointName.Length <= SafeText.MaxIdLength
        && !message.StreamId.Any(char.IsControl);

    /// <summary>A parked stream the relay ends after at least this long is replaced at once.</summary>
    private static readonly TimeSpan ParkedReplaceMinimumAge = TimeSpan.FromSeconds(1);

    /// <summary>How far serving an offer got, so a failure nobody expected can finish what was started.</summary>
    private sealed class ServeProgress
    {
        public ConnectionSlot? Slot;
        public ConnectionTelemetry? Telemetry;
        public bool Answered;
    }

    /// <summary>
    /// Serves one offer; nobody awaits it. Whatever throws, the offer is answered (refused if it was not yet) and its
    /// places in the connection limits come back: a failure here must not leave a public client waiting for the relay's
    /// timeout or a connection counted for ever.
    /// </summary>
    private async Task ServeAsync(ConnectionRun run, OpenStream message, AsyncDuplexStreamingCall<DataFrame, DataFrame>? parkedCall = null)
    {
        var progress = new ServeProgress();
        try
        {
            await ServeCoreAsync(run, message, parkedCall, progress).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Nobody awaits this task: every failure is handled here.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            try
            {
                progress.Telemetry?.End("aborted");
            }
#pragma warning disable CA1031 // A listener that throws again: the release below is what matters.
            catch (Exception)
#pragma warning restore CA1031
            {
            }
            finally
            {
                // Releasing twice is harmless; not releasing (a listener that threw in End) would be for ever.
                progress.Slot?.Release();
            }

            if (!progress.Answered)
            {
                Refuse(run, message, parkedCall, StreamRefusal.Aborted, "the agent failed to serve it");
            }

            TryLog(() => SessionLog.UnexpectedFailure(_logger, "serving a connection", ex));
        }
    }

    /// <summary>Logs, unless logging itself fails (a broken sink must not stop the cleanup that follows or precedes it).</summary>
    private static void TryLog(Action log)
    {
        try
        {
            log();
        }
#pragma warning disable CA1031 // The logging pipeline threw: nothing better can be done with it.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    private async Task ServeCoreAsync(ConnectionRun run, OpenStream message, AsyncDuplexStreamingCall<DataFrame, DataFrame>? parkedCall, ServeProgress progress)
    {
        // Leave the read loop at once; serving (connecting upstream, bridging) happens here.
        await Task.Yield();
        if (!IsWellFormed(message))
        {
            // Not an offer this agent can answer (a refusal would echo the relay's oversized text back to it).
            if (_offerLog.ShouldLog(OfferEvent.MalformedOffer, out var held))
            {
                SessionLog.MalformedOffer(_logger, SafeText.Clean(message.StreamId, SafeText.MaxIdLength), held);
            }

            progress.Answered = true;
            _telemetry.OnRefused(UnknownEndpointTag, "malformed_offer");
            parkedCall?.Dispose();
            return;
        }

        if (!_bindingsById.TryGetValue(message.BindId, out var binding) || !binding.IsBound || _stopping.IsCancellationRequested
            || !string.Equals(binding.Name, message.EndpointName, StringComparison.OrdinalIgnoreCase))
        {
            if (_offerLog.ShouldLog(OfferEvent.UnknownBind, out var held))
            {
                SessionLog.UnknownBind(_logger, SafeText.Clean(message.StreamId, SafeText.MaxIdLength), SafeText.Clean(message.BindId, SafeText.MaxIdLength), held);
            }

            // Tagged with a fixed value, not the relay's text: a relay cannot grow the metric's series.
            progress.Answered = true;
            _telemetry.OnRefused(UnknownEndpointTag, "unknown_endpoint");
            Refuse(run, message, parkedCall, StreamRefusal.UnknownEndpoint, "no endpoint is bound with that bind id");
            return;
        }

        var slot = ConnectionSlot.TryTake(_connectionLimit, binding.Connections, out var full);
        if (slot is null)
        {
            var limit = full == _connectionLimit ? nameof(TunnelSessionOptions.MaxConcurrentConnections) : nameof(TunnelSessionOptions.MaxConcurrentConnectionsPerEndpoint);
            var max = full!.Max;
            if (_offerLog.ShouldLog(OfferEvent.ConnectionLimitReached, out var held))
            {
                SessionLog.ConnectionLimitReached(_logger, binding.Name, SafeText.Clean(message.StreamId, SafeText.MaxIdLength), limit, max, held);
            }

            progress.Answered = true;
            _telemetry.OnRefused(binding.Name, "overloaded");
            Refuse(run, message, parkedCall, StreamRefusal.Overloaded, $"endpoint '{binding.Name}': the agent serves {max} connections at once ({limit})");
            return;
        }

        progress.Slot = slot;
        // The relay's words about the client are capped and cleaned before the application, logs or traces see them.
        var info = new TunnelConnectionInfo(
            binding.Name,
            // The relay's text, capped, parsed: an address the application can use, or null (never the relay's raw words).
            System.Net.IPEndPoint.TryParse(SafeText.Clean(message.ClientAddress, SafeText.MaxIdLength), out var client) ? client : null,
            string.IsNullOrEmpty(message.Sni) ? null : SafeText.Clean(message.Sni, 255),
            SafeText.Clean(message.StreamId, SafeText.MaxIdLength));
        SessionLog.ConnectionOpened(_logger, info.StreamId, info.ClientAddress?.ToString() ?? "unknown", binding.Name);
        // Every way a connection ends (refused, failed, released) ends its telemetry exactly once: that is also when its
        // places in the connection limits come back.
        var telemetry = new ConnectionTelemetry(_telemetry, Options.TimeProvider, info, (outcome, duration) =>
        {
            slot.Release();
            Raise(ConnectionClosed, new TunnelConnectionEventArgs(info, outcome switch
            {
                "completed" => TunnelConnectionOutcome.Completed,
                "refused" => TunnelConnectionOutcome.Refused,
                _ => TunnelConnectionOutcome.Aborted,
            }, duration));
        });
        progress.Telemetry = telemetry;
        Raise(ConnectionOpened, new TunnelConnectionEventArgs(info, null, TimeSpan.Zero));
        var offer = new Offer(run, message, info, telemetry, parkedCall);
        try
        {
            await binding.ServeAsync(offer, _aborting.Token).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Nobody awaits an offer's task: whatever failed, it is ended (its places in the limits come back) and said.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            offer.Telemetry.End("aborted");
            // So the relay closes the public client now rather than when the offer expires.
            Refuse(run, message, parkedCall, StreamRefusal.Aborted, "the agent failed to serve it");
            progress.Answered = true;
            TryLog(() => LogStreamOpenFailed(offer, $"{ex.GetType().Name}: {ex.Message}"));
        }
    }

    /// <summary>Opens the data stream for an offer on the connection it came from; null (and logged) when that connection is gone.</summary>
    internal TunnelStream? TryOpenStream(Offer offer)
    {
        var run = offer.Run;
        if (run.HasEnded && !run.IsDraining)
        {
            LogStreamOpenFailed(offer, "the connection to the relay is closed");
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
                : run.Connection.OpenStream(run.SessionId, offer.Message.StreamId, () => Refuse(run, offer.Message, null, StreamRefusal.Aborted, "aborted by the agent"), Released, run.Connection.Lifetime);
            stream.Telemetry = offer.Telemetry;
            return stream;
        }
        catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException or RpcException)
        {
            run.Streams.Decrement();
            _activeConnections.Decrement();
            offer.Telemetry.End("refused");
            LogStreamOpenFailed(offer, ex.Message);
            return null;
        }
    }

    internal void RefuseUpstreamUnavailable(Offer offer, EndpointBinding binding, string reason)
    {
        if (_offerLog.ShouldLog(OfferEvent.UpstreamConnectFailed, out var held))
        {
            SessionLog.UpstreamConnectFailed(_logger, binding.Name, binding.Upstream?.ToString() ?? "", offer.StreamId, reason, held);
        }

        offer.Telemetry.End("refused");
        Refuse(offer.Run, offer.Message, offer.ParkedCall, StreamRefusal.UpstreamUnavailable, $"endpoint '{binding.Name}': upstream unreachable ({reason})");
    }

    internal void RefuseOverloaded(Offer offer, string endpointName)
    {
        if (_offerLog.ShouldLog(OfferEvent.ListenerBacklogFull, out var held))
        {
            SessionLog.ListenerBacklogFull(_logger, endpointName, offer.StreamId, held);
        }

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
#pragma warning disable CA1031 // Nobody awaits this task: the call is released below whatever happened.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            TryLog(() => SessionLog.UnexpectedFailure(_logger, "releasing a refused parked stream", ex));
        }
        finally
        {
            call.Dispose();
        }
    }

    internal void OnTlsHandshakeFailed(Offer offer, Exception exception)
    {
        if (_offerLog.ShouldLog(OfferEvent.HandlerFailed, out var held))
        {
            SessionLog.TlsHandshakeFailed(_logger, offer.Info.EndpointName, offer.StreamId, SafeText.Clean(exception.Message), held);
        }
    }

    internal void OnHandlerFailed(Offer offer, Exception exception)
    {
        if (_offerLog.ShouldLog(OfferEvent.HandlerFailed, out var held))
        {
            SessionLog.HandlerFailed(_logger, offer.Info.EndpointName, offer.StreamId, held, exception);
        }
    }

    private void LogStreamOpenFailed(Offer offer, string reason)
    {
        if (_offerLog.ShouldLog(OfferEvent.StreamOpenFailed, out var held))
        {
            SessionLog.StreamOpenFailed(_logger, offer.StreamId, offer.Info.EndpointName, reason, held);
        }
    }

    internal void OnConnectionClosed(Offer offer, BridgeResult result) =>
        SessionLog.ConnectionClosed(_logger, offer.StreamId, offer.Info.EndpointName, result);
}
