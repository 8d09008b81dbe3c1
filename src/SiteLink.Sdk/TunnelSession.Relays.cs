using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using SiteLink.Endpoints;
using SiteLink.Protocol;

namespace SiteLink;

// Several relays at once (TunnelSessionOptions.RelayUrls): one session per relay (a "link", a TunnelSession of one
// relay, with its own connection, heartbeats, backoff and endpoints), and this one in front of them: endpoints bound on
// every link, events passed on, State Connected while any link is.
public sealed partial class TunnelSession
{
    /// <summary>One session per relay when the options name several; null when this session is itself the connection to one relay.</summary>
    private readonly TunnelSession[]? _links;
    private readonly ConcurrentDictionary<string, LinkedEndpoint> _linkedEndpoints = new(StringComparer.OrdinalIgnoreCase);
    private readonly object _linksGate = new();
    private string _sessionId = "";
    private RelayInfo _relay;
    private bool _everConnected;

    /// <inheritdoc />
    public IReadOnlyList<TunnelRelayStatus> Relays => _links is null ? [OwnStatus()] : [.. _links.Select(l => l.OwnStatus())];

    private TunnelRelayStatus OwnStatus() =>
        new(_relay.Url, _relay.RelayId, _relay.Region, State, _run?.Heartbeat.LastRoundTrip, _sessionId, Fault);

    /// <summary>The first link connected now, or null (one relay, or none connected).</summary>
    private TunnelSession? CurrentLink => _links?.FirstOrDefault(l => l.State == TunnelSessionState.Connected);

    internal static TunnelSessionOptions LinkOptions(TunnelSessionOptions options, Uri url)
    {
        var copy = options.Snapshot();
        copy.RelayUrl = url;
        copy.RelayUrls.Clear();
        return copy;
    }

    private void AttachLinks()
    {
        foreach (var link in _links!)
        {
            link.StateChanged += (sender, e) => OnLinkStateChanged((TunnelSession)sender!, e);
            link.ReconnectAttemptFailed += (_, e) => Raise(ReconnectAttemptFailed, e);
            link.BindCompleted += (_, e) => Raise(BindCompleted, e);
            link.ConnectionOpened += (_, e) => Raise(ConnectionOpened, e);
            link.ConnectionClosed += (_, e) => Raise(ConnectionClosed, e);
        }

        // Endpoints declared in the options: each link declared its own; here they are one endpoint each.
        foreach (var endpoint in Options.Endpoints)
        {
            _linkedEndpoints[endpoint.Name] = LinkedEndpoint.Create(this, [.. _links.Select(l => (ITunnelEndpoint)l._bindingsByName[endpoint.Name])]);
        }
    }

    /// <summary>
    /// Connects to every relay at once. Succeeds when at least one connects (the others keep trying in the background,
    /// each with its own backoff); fails with the first relay's error when none does, or with a refusal of a declared
    /// endpoint (which a retry would not change).
    /// </summary>
    private static async Task<TunnelSession> ConnectSeveralAsync(TunnelSessionOptions options, CancellationToken cancellationToken)
    {
        var session = new TunnelSession(options) { _started = true };
        var links = session._links!;
        var attempts = links.Select(link => link.ConnectFirstAsync(cancellationToken)).ToArray();
        try
        {
            await Task.WhenAll(attempts).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Each attempt's outcome is looked at below.
        catch (Exception)
#pragma warning restore CA1031
        {
        }

        var failures = attempts.Where(a => !a.IsCompletedSuccessfully).Select(a => a.Exception?.InnerException ?? new OperationCanceledException(cancellationToken)).ToArray();
        // What a retry would not change fails the call even when another relay answered: a refused declared endpoint,
        // a rejected token or certificate, an unsupported version, bad arguments, the caller's cancellation.
        var final = failures.FirstOrDefault(f => f is TunnelBindException or ArgumentException or OperationCanceledException or TunnelException { IsTransient: false });
        if (failures.Length == links.Length || final is not null)
        {
            await session.DisposeAsync().ConfigureAwait(false);
            ExceptionDispatchInfo.Throw(final ?? failures[0]);
        }

        foreach (var link in links.Where(l => !l._connected))
        {
            // Unreachable for now: it keeps trying on its own while the others serve.
            link.StartInBackground();
        }

        session.OnLinkStateChanged(null, null);
        return session;
    }

    /// <summary>This link's first connection, tried once (as <see cref="ConnectAsync"/> does for one relay).</summary>
    private async Task ConnectFirstAsync(CancellationToken cancellationToken)
    {
        lock (_stateGate)
        {
            _started = true;
        }

        ConnectionRun run;
        try
        {
            run = await ConnectOnceAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            lock (_stateGate)
            {
                // Not started after all: StartInBackground may start it.
                _started = false;
            }

            throw;
        }

        _connected = true;
        SetState(TunnelSessionState.Connected, $"connected to relay {Relay.RelayId}", null, out var declared);
        _supervisor = SuperviseAsync(run);
        foreach (var binding in declared)
        {
            await BindOnAsync(run, binding, isRebind: false, cancellationToken).ConfigureAwait(false);
        }
    }

    private volatile bool _connected;

    private int _recomputeRequests;
    private (TunnelSession? Link, TunnelStateChangedEventArgs? Change) _lastLinkChange;

    /// <summary>
    /// Recomputes this session's state from its links': Connected while any is, Faulted or Closed when all are. Serial
    /// without a lock held across the change: whoever comes first recomputes, again for as long as links changed
    /// meanwhile, each time from every link's state now — so the last state set is the current one, and a
    /// StateChanged handler (application code, which may block or close the session) runs under no lock of ours.
    /// </summary>
    private void OnLinkStateChanged(TunnelSession? link, TunnelStateChangedEventArgs? change)
    {
        lock (_linksGate)
        {
            _lastLinkChange = (link, change);
        }

        if (Interlocked.Increment(ref _recomputeRequests) != 1)
        {
            return;
        }

        do
        {
            // Closing: the links end one by one; the session says Closed itself once they all have.
            if (!_stopping.IsCancellationRequested)
            {
                RecomputeState();
            }
        }
        while (Interlocked.Decrement(ref _recomputeRequests) != 0);
    }

    private void RecomputeState()
    {
        var links = _links!;
        var states = links.Select(l => l.State).ToArray();
        var state = states.Contains(TunnelSessionState.Connected) ? TunnelSessionState.Connected
            : states.All(s => s == TunnelSessionState.Closed) ? TunnelSessionState.Closed
            : states.All(s => s is TunnelSessionState.Faulted or TunnelSessionState.Closed) ? TunnelSessionState.Faulted
            : Volatile.Read(ref _everConnected) ? TunnelSessionState.Reconnecting
            : TunnelSessionState.Connecting;
        if (state == TunnelSessionState.Connected)
        {
            Volatile.Write(ref _everConnected, true);
        }

        // Kept for when no relay is connected: SessionId and Relay then tell the last one that was.
        if (CurrentLink is { } current)
        {
            _sessionId = current.SessionId;
            _relay = current.Relay;
        }

        (TunnelSession? Link, TunnelStateChangedEventArgs? Change) last;
        lock (_linksGate)
        {
            last = _lastLinkChange;
        }

        var connected = states.Count(s => s == TunnelSessionState.Connected);
        var reason = last.Link is null
            ? $"connected to {connected} of {states.Length} relays"
            : $"relay {last.Link.Options.RelayUrl}: {last.Change!.Reason} ({connected} of {states.Length} relays connected)";
        var exception = state == TunnelSessionState.Faulted ? links.Select(l => l.Fault).FirstOrDefault(f => f is not null) : last.Change?.Exception;
        SetState(state, reason, exception);
    }

    private async Task CloseLinksAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(_links!.Select(async link =>
        {
            await link.CloseAsync(cancellationToken).ConfigureAwait(false);
            await link.DisposeAsync().ConfigureAwait(false);
        })).ConfigureAwait(false);
        foreach (var endpoint in _linkedEndpoints.Values)
        {
            endpoint.Stop();
        }

        SetState(TunnelSessionState.Closed, "the session was closed", null);
        _offerLog.Dispose();
    }

    /// <summary>Names being bound on the links right now, so two binds of one name cannot split across them.</summary>
    private readonly ConcurrentDictionary<string, byte> _bindingNames = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Binds an endpoint on every link; fails when one refuses it, or when none takes it.</summary>
    private async Task<ITunnelEndpoint> BindOnLinksAsync(string name, Func<TunnelSession, Task<ITunnelEndpoint>> bind)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0 || _stopping.IsCancellationRequested, this);
        if (_linkedEndpoints.ContainsKey(name) || !_bindingNames.TryAdd(name, 0))
        {
            throw new ArgumentException($"An endpoint named '{name}' is already bound in this session.", nameof(name));
        }

        try
        {
            var links = _links!;
            var attempts = links.Select(bind).ToArray();
            try
            {
                await Task.WhenAll(attempts).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // Each attempt's outcome is looked at below.
            catch (Exception)
#pragma warning restore CA1031
            {
            }

            var bound = attempts.Where(a => a.IsCompletedSuccessfully).Select(a => a.Result).ToArray();
            // A link that is faulted or closed has no say (it serves nothing); any other failure — a refusal, a relay
            // that did not answer, bad arguments, the caller's cancellation — is the answer, and what the other links
            // bound is unbound again: an endpoint is on every working relay or on none.
            var failures = attempts.Select((a, i) => (Attempt: a, Link: links[i]))
                .Where(x => !x.Attempt.IsCompletedSuccessfully)
                .Select(x => (Error: x.Attempt.Exception?.InnerException ?? new OperationCanceledException(), x.Link))
                .ToArray();
            var answer = failures.FirstOrDefault(f => !(f.Error is TunnelConnectionException && f.Link.State is TunnelSessionState.Faulted or TunnelSessionState.Closed)).Error
                ?? (bound.Length == 0 ? failures[0].Error : null);
            if (answer is not null)
            {
                foreach (var endpoint in bound)
                {
                    await endpoint.DisposeAsync().ConfigureAwait(false);
                }

                ExceptionDispatchInfo.Throw(answer);
            }

            var linked = LinkedEndpoint.Create(this, bound);
            _linkedEndpoints[name] = linked;
            return linked;
        }
        finally
        {
            _bindingNames.TryRemove(name, out _);
        }
    }

    private void OnLinkedEndpointDisposed(LinkedEndpoint endpoint) =>
        _linkedEndpoints.TryRemove(new KeyValuePair<string, LinkedEndpoint>(endpoint.Name, endpoint));

    /// <summary>One endpoint bound on several relays: bound while any of them has it, ended when all have ended.</summary>
    private class LinkedEndpoint : ITunnelEndpoint
    {
        private readonly TunnelSession _owner;
        private int _disposed;

        protected LinkedEndpoint(TunnelSession owner, ITunnelEndpoint[] parts)
        {
            _owner = owner;
            Parts = parts;
            Completion = Task.WhenAll(parts.Select(p => p.Completion));
            // Most applications never await Completion: a fault must not surface as an unobserved task exception.
            _ = Completion.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        public static LinkedEndpoint Create(TunnelSession owner, ITunnelEndpoint[] parts) =>
            parts[0] is ITunnelListener ? new LinkedListener(owner, parts) : new LinkedEndpoint(owner, parts);

        protected ITunnelEndpoint[] Parts { get; }

        public string Name => Parts[0].Name;

        public TunnelEndpointKind Kind => Parts[0].Kind;

        public Uri? Upstream => Parts[0].Upstream;

        public string? Description => Parts[0].Description;

        public IReadOnlyDictionary<string, string> Metadata => Parts[0].Metadata;

        public bool IsBound => Parts.Any(p => p.IsBound);

        public Task Completion { get; }

        /// <summary>The session closed: nothing more to pass on.</summary>
        public virtual void Stop()
        {
        }

        public async ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
            {
                return;
            }

            foreach (var part in Parts)
            {
                await part.DisposeAsync().ConfigureAwait(false);
            }

            Stop();
            // Only now: the name may be bound again once no relay routes it here any more.
            _owner.OnLinkedEndpointDisposed(this);
        }
    }

    /// <summary>A listener on several relays: one queue of the connections any of them accepted.</summary>
    private sealed class LinkedListener : LinkedEndpoint, ITunnelListener
    {
        // A small hand-over queue: each relay's listener keeps its own backlog (ListenerBacklog) behind it.
        private readonly System.Threading.Channels.Channel<TunnelConnection> _accepted = System.Threading.Channels.Channel.CreateBounded<TunnelConnection>(1);
        private readonly CancellationTokenSource _stop = new();

        public LinkedListener(TunnelSession owner, ITunnelEndpoint[] parts)
            : base(owner, parts)
        {
            var pumps = parts.Cast<ITunnelListener>().Select(PumpAsync).ToArray();
            _ = Task.WhenAll(pumps).ContinueWith(_ => _accepted.Writer.TryComplete(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        private async Task PumpAsync(ITunnelListener part)
        {
            try
            {
                await foreach (var connection in part.AcceptAllAsync(_stop.Token).ConfigureAwait(false))
                {
                    try
                    {
                        await _accepted.Writer.WriteAsync(connection, _stop.Token).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is OperationCanceledException or System.Threading.Channels.ChannelClosedException)
                    {
                        await connection.DisposeAsync().ConfigureAwait(false);
                        return;
                    }
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException)
            {
                // Stopped, or that relay's listener was unbound.
            }
        }

        public async ValueTask<TunnelConnection> AcceptAsync(CancellationToken cancellationToken = default)
        {
            try
            {
                return await _accepted.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (System.Threading.Channels.ChannelClosedException ex)
            {
                throw new ObjectDisposedException($"The listener for endpoint '{Name}' is unbound.", ex);
            }
        }

        public async IAsyncEnumerable<TunnelConnection> AcceptAllAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            while (await _accepted.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                while (_accepted.Reader.TryRead(out var connection))
                {
                    yield return connection;
                }
            }
        }

        public override void Stop()
        {
            try
            {
                _stop.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // Stopped already.
            }

            _accepted.Writer.TryComplete();
            while (_accepted.Reader.TryRead(out var left))
            {
                // Accepted by a relay's listener but never handed to the application: closed, not leaked.
                _ = left.DisposeAsync().AsTask();
            }
        }
    }
}

/// <summary>One relay a session connects to, and how that connection stands (<see cref="TunnelSession.Relays"/>).</summary>
/// <param name="Url">The relay's agent address.</param>
/// <param name="RelayId">The relay's id (empty until it first answered).</param>
/// <param name="Region">The relay's region (empty until it first answered, or when it has none).</param>
/// <param name="State">The connection's state.</param>
/// <param name="LastHeartbeatRoundTrip">The last heartbeat's round trip on this connection, if one was answered.</param>
/// <param name="SessionId">The session id this relay gave (empty until connected).</param>
/// <param name="Fault">Why this connection gave up, when <paramref name="State"/> is <see cref="TunnelSessionState.Faulted"/>.</param>
public sealed record TunnelRelayStatus(Uri Url, string RelayId, string Region, TunnelSessionState State, TimeSpan? LastHeartbeatRoundTrip, string SessionId, TunnelException? Fault);
