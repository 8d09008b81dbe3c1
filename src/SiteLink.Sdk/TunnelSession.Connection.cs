using Polly;
using SiteLink.Diagnostics;
using SiteLink.Endpoints;
using SiteLink.Protocol;
using SiteLink.Protocol.V1;

namespace SiteLink;

// Connecting, supervising the connection to the relay, reconnecting and draining.
public sealed partial class TunnelSession
{
    /// <summary>
    /// Creates a session that is not connected yet, for a host: endpoints may be declared with <see cref="Declare"/>,
    /// then <see cref="StartInBackground"/> connects (retrying transient failures) without blocking the caller.
    /// </summary>
    internal static TunnelSession CreateUnstarted(TunnelSessionOptions options) => new(options);

    /// <summary>Connects in the background, retrying transient failures forever, then binds the declared endpoints.</summary>
    internal void StartInBackground()
    {
        lock (_stateGate)
        {
            if (_started)
            {
                return;
            }

            _started = true;
        }

        if (_links is not null)
        {
            foreach (var link in _links)
            {
                link.StartInBackground();
            }

            return;
        }

        _supervisor = RunInBackgroundAsync();
    }

    private async Task RunInBackgroundAsync()
    {
        if (await ConnectThroughPipelineAsync("Connecting").ConfigureAwait(false) is not { } run)
        {
            return;
        }

        SetState(TunnelSessionState.Connected, $"connected to relay {Relay.RelayId}", null, out var toBind);
        await RebindAllAsync(run, toBind, isRebind: false).ConfigureAwait(false);
        await SuperviseAsync(run).ConfigureAwait(false);
    }

    /// <summary>
    /// Connects through the retry pipeline. Null when the session is stopping (nothing is left open) or when a
    /// permanent error ended the attempts (the session is then Faulted with it).
    /// </summary>
    private async Task<ConnectionRun?> ConnectThroughPipelineAsync(string what)
    {
        ConnectionRun run;
        try
        {
            run = await _reconnect.ExecuteAsync(async ct => await ConnectOnceAsync(ct).ConfigureAwait(false), _stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
            return null;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            var fault = ex as TunnelException ?? new TunnelConnectionException($"{what} failed: {ex.Message}", ex, isTransient: false);
            SetState(TunnelSessionState.Faulted, fault.Message, fault);
            return null;
        }

        if (_stopping.IsCancellationRequested)
        {
            await run.DisposeAsync().ConfigureAwait(false);
            return null;
        }

        return run;
    }

    /// <summary>One attempt: connect, handshake, start the read loop and heartbeats. Throws a typed exception.</summary>
    private async Task<ConnectionRun> ConnectOnceAsync(CancellationToken cancellationToken)
    {
        var previous = string.IsNullOrEmpty(SessionId) ? null : SessionId;
        var connection = await RelayConnection.ConnectAsync(Options, _clientId, previous, cancellationToken).ConfigureAwait(false);
        var welcome = connection.Welcome;
        var run = new ConnectionRun(connection, Options, Dispatch, _logger, rtt => _telemetry.HeartbeatRoundTrip.Record(rtt.TotalSeconds))
        {
            Parking = new ParkingPolicy((int)Math.Min((uint)Options.ParkedStreams, welcome.Limits?.MaxParkedStreams ?? 0)),
        };
        SessionId = welcome.SessionId;
        Relay = new RelayInfo(welcome.RelayId, welcome.Region, Options.RelayUrl!);
        _run = run;
        run.Start();
        if (connection.CanMultiplex)
        {
            StartMultiplexed(run);
        }
        else
        {
            EnsureParked(run);
        }

        SessionLog.Connected(_logger, welcome.RelayId, welcome.Region, Options.RelayUrl!, welcome.SessionId);
        return run;
    }

    /// <summary>Watches the current connection; when it ends, reconnects and binds every endpoint again.</summary>
    private async Task SuperviseAsync(ConnectionRun run)
    {
        while (true)
        {
            var end = await run.Completion.ConfigureAwait(false);
            if (_stopping.IsCancellationRequested)
            {
                return;
            }

            foreach (var binding in _bindingsByName.Values)
            {
                binding.SetBound(false);
            }

            FailPendingBinds(new TunnelConnectionException($"The connection to the relay was lost: {end.Reason}", end.Exception));
            SessionLog.ConnectionLost(_logger, Options.RelayUrl!, end.Reason);
            if (end.Exception is { } cause)
            {
                SessionLog.ConnectionLostDetail(_logger, Options.RelayUrl!, cause);
            }
            if (end.Exception is TunnelException { IsTransient: false } permanent)
            {
                await run.DisposeAsync().ConfigureAwait(false);
                SetState(TunnelSessionState.Faulted, end.Reason, permanent);
                return;
            }

            SetState(TunnelSessionState.Reconnecting, end.Reason, end.Exception);
            if (end.Drain)
            {
                // The relay is going away: let its connections finish there while the session moves on.
                _ = DrainAsync(run, end.DrainDeadline);
            }
            else
            {
                await run.DisposeAsync().ConfigureAwait(false);
            }

            if (await ConnectThroughPipelineAsync("Reconnecting").ConfigureAwait(false) is not { } next)
            {
                return;
            }

            run = next;

            SetState(TunnelSessionState.Connected, $"reconnected to relay {Relay.RelayId}", null, out var toBind);
            _telemetry.Reconnects.Add(1);
            SessionLog.Reconnected(_logger, Relay.RelayId, toBind.Length);
            await RebindAllAsync(run, toBind, isRebind: true).ConfigureAwait(false);
        }
    }

    private void OnReconnectAttemptFailed(int attempt, TimeSpan delay, Exception? exception)
    {
        // The first connection is not a reconnection: say which it is.
        if (State == TunnelSessionState.Connecting)
        {
            SessionLog.ConnectAttemptFailed(_logger, attempt, delay, exception?.Message ?? "unknown");
        }
        else
        {
            SessionLog.ReconnectAttemptFailed(_logger, attempt, delay, exception?.Message ?? "unknown");
        }

        _telemetry.ConnectFailures.Add(1, new KeyValuePair<string, object?>(SdkTelemetry.ErrorTypeTag, exception?.GetType().Name ?? "unknown"));
        Raise(ReconnectAttemptFailed, new TunnelReconnectEventArgs(attempt, delay, exception));
    }

    private async Task RebindAllAsync(ConnectionRun run, EndpointBinding[] bindings, bool isRebind)
    {
        var rebinds = bindings.Where(b => !b.IsClosed).Select(async binding =>
        {
            try
            {
                await BindOnAsync(run, binding, isRebind, CancellationToken.None).ConfigureAwait(false);
            }
            catch (TunnelBindException refused)
            {
                // Refused now (e.g. the token's ACL changed): the endpoint is gone; BindCompleted and its Completion say why.
                RemoveBinding(binding, refused);
            }
            catch (TunnelException)
            {
                // The connection dropped while rebinding; the supervisor reconnects and tries again.
            }
        });
        await Task.WhenAll(rebinds).ConfigureAwait(false);
    }

    private async Task DrainAsync(ConnectionRun run, TimeSpan deadline)
    {
        var limit = deadline > TimeSpan.Zero && deadline < Options.DrainTimeout ? deadline : Options.DrainTimeout;
        try
        {
            run.Connection.Send(new AgentMessage { Goodbye = new Goodbye { Reason = "draining at the relay's request" } });
            await run.Streams.WhenIdleAsync().WaitAsync(limit, Options.TimeProvider).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Connections still open at the deadline are closed with the connection.
        }
#pragma warning disable CA1031 // Nobody awaits this task: the connection is disposed below whatever happened.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            TryLog(() => SessionLog.UnexpectedFailure(_logger, "draining a connection the relay gave up", ex));
        }

        try
        {
            await run.DisposeAsync().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // As above.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            TryLog(() => SessionLog.UnexpectedFailure(_logger, "closing a drained connection", ex));
        }
    }
}
