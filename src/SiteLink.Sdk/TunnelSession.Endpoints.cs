using SiteLink.Diagnostics;
using SiteLink.Endpoints;
using SiteLink.Internal;
using SiteLink.Protocol;
using SiteLink.Protocol.V1;

namespace SiteLink;

// Declaring, binding, rebinding and unbinding endpoints.
public sealed partial class TunnelSession
{
    /// <summary>Adds an endpoint to bind whenever the session connects. Before start only.</summary>
    internal void Declare(EndpointBinding binding)
    {
        if (!_bindingsByName.TryAdd(binding.Name, binding))
        {
            throw new ArgumentException($"An endpoint named '{binding.Name}' is declared more than once.", nameof(binding));
        }

        _bindingsById[binding.BindId] = binding;
    }

    /// <summary>Declares an in-process handler endpoint (used by the host integration).</summary>
    internal void DeclareHandler(string name, TunnelConnectionHandler handler, EndpointOptions? options)
    {
        if (_links is not null)
        {
            foreach (var link in _links)
            {
                link.DeclareHandler(name, handler, options);
            }

            _linkedEndpoints[name] = LinkedEndpoint.Create(this, [.. _links.Select(l => (ITunnelEndpoint)l._bindingsByName[name])]);
            return;
        }

        Declare(new HandlerBinding(this, name, handler, CheckOptions(options, forward: false)));
    }

    /// <inheritdoc />
    public async Task<ITunnelEndpoint> ForwardAsync(string name, Uri upstream, EndpointOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(upstream);
        if (Upstreams.FindProblem(upstream) is { } problem)
        {
            throw new ArgumentException($"Cannot forward '{name}': {problem}.", nameof(upstream));
        }

        if (_links is not null)
        {
            CheckOptions(options);
            return await BindOnLinksAsync(CheckName(name), link => link.ForwardAsync(name, upstream, options, cancellationToken)).ConfigureAwait(false);
        }

        return await BindAsync(new ForwardBinding(this, CheckName(name), upstream, CheckOptions(options)), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async Task<ITunnelEndpoint> BindHandlerAsync(string name, TunnelConnectionHandler handler, EndpointOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(handler);
        if (_links is not null)
        {
            CheckOptions(options, forward: false);
            return await BindOnLinksAsync(CheckName(name), link => link.BindHandlerAsync(name, handler, options, cancellationToken)).ConfigureAwait(false);
        }

        return await BindAsync(new HandlerBinding(this, CheckName(name), handler, CheckOptions(options, forward: false)), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async Task<ITunnelListener> ListenAsync(string name, EndpointOptions? options = null, CancellationToken cancellationToken = default)
    {
        if (_links is not null)
        {
            CheckOptions(options, forward: false);
            return (ITunnelListener)await BindOnLinksAsync(CheckName(name), async link => await link.ListenAsync(name, options, cancellationToken).ConfigureAwait(false)).ConfigureAwait(false);
        }

        return (ListenerBinding)await BindAsync(new ListenerBinding(this, CheckName(name), Options.ListenerBacklog, CheckOptions(options, forward: false)), cancellationToken).ConfigureAwait(false);
    }

    private static string CheckName(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        return name;
    }

    /// <summary>A copy of <paramref name="options"/>, checked: what is validated is what is bound, whatever the caller does next.</summary>
    private static EndpointOptions? CheckOptions(EndpointOptions? options, bool forward = true)
    {
        var copy = options?.Snapshot();
        if (copy?.FindProblem() is { } problem)
        {
            throw new ArgumentException($"Invalid endpoint options: {problem}.", nameof(options));
        }

        if (!forward && copy?.TlsServer is not null)
        {
            throw new ArgumentException("Invalid endpoint options: TlsServer applies to forward endpoints (ForwardAsync); an in-process handler terminates TLS itself by wrapping TunnelConnection.Stream in an SslStream.", nameof(options));
        }

        if (!forward && copy?.ProxyProtocol is not (null or ProxyProtocolVersion.None))
        {
            throw new ArgumentException("Invalid endpoint options: ProxyProtocol applies to forward endpoints (ForwardAsync), whose upstream reads the header; an in-process endpoint has TunnelConnection.Info instead.", nameof(options));
        }

        return copy;
    }

    private async Task<EndpointBinding> BindAsync(EndpointBinding binding, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0 || _stopping.IsCancellationRequested, this);
        ConnectionRun? run;
        lock (_stateGate)
        {
            // Under the lock that (re)connecting takes to become Connected: either this endpoint is in the list the
            // session binds once connected, or the session is connected and it is bound here. Never neither.
            var state = _state;
            if (state is TunnelSessionState.Faulted or TunnelSessionState.Closed)
            {
                throw new TunnelConnectionException($"Cannot bind '{binding.Name}': the session is {state}.");
            }

            if (!_bindingsByName.TryAdd(binding.Name, binding))
            {
                throw new ArgumentException($"An endpoint named '{binding.Name}' is already bound in this session.", nameof(binding));
            }

            _bindingsById[binding.BindId] = binding;
            run = state == TunnelSessionState.Connected ? _run : null;
        }

        // A connection that already ended but is not yet seen as lost (state still Connected): the reconnect binds it.
        if (run is null || run.HasEnded)
        {
            // Connecting or reconnecting: accepted now, bound with the others once connected (BindCompleted tells
            // the outcome; until then IsBound is false).
            return binding;
        }

        try
        {
            await BindOnAsync(run, binding, isRebind: false, cancellationToken).ConfigureAwait(false);
            return binding;
        }
        catch (TunnelConnectionException) when (run.HasEnded && State is not (TunnelSessionState.Faulted or TunnelSessionState.Closed))
        {
            // The connection dropped under the bind: it stays declared and is bound once reconnected.
            return binding;
        }
        catch (Exception ex)
        {
            RemoveBinding(binding, ex as TunnelException);
            throw;
        }
    }

    /// <summary>Sends Bind on <paramref name="run"/> and waits for the answer. Reports the outcome in <see cref="BindCompleted"/>.</summary>
    private async Task BindOnAsync(ConnectionRun run, EndpointBinding binding, bool isRebind, CancellationToken cancellationToken)
    {
        var answer = new TaskCompletionSource<BindResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pendingBinds[binding.BindId] = answer;
        try
        {
            var bind = new Bind { BindId = binding.BindId, Name = binding.Name, Kind = ErrorMapping.ToWireKind(binding.Kind), Description = binding.Description ?? "", Pooling = binding.Pooling };
            foreach (var (key, value) in binding.Metadata)
            {
                bind.Metadata[key] = value;
            }
            if (!run.Connection.Send(new AgentMessage { Bind = bind }))
            {
                throw new TunnelConnectionException($"Cannot bind '{binding.Name}': the connection to the relay is closing.");
            }

            BindResult result;
            try
            {
                result = await answer.Task.WaitAsync(Options.RequestTimeout, Options.TimeProvider, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException ex)
            {
                run.Connection.Send(new AgentMessage { Unbind = new Unbind { BindId = binding.BindId } });
                throw new TunnelConnectionException($"The relay did not answer the bind of '{binding.Name}' within {Options.RequestTimeout}.", ex);
            }

            if (result.Status != BindStatus.Ok)
            {
                var code = ErrorMapping.FromBindStatus(result.Status);
                var why = SafeText.Clean(result.Message);
                SessionLog.BindRefused(_logger, binding.Name, code, why);
                throw new TunnelBindException(binding.Name, code, $"The relay refused to bind '{binding.Name}': {why}");
            }

            SessionLog.EndpointBound(_logger, binding.Name, binding.Kind);
            Raise(BindCompleted, new TunnelBindEventArgs(binding.Name, isRebind, null));
        }
        catch (TunnelException ex)
        {
            Raise(BindCompleted, new TunnelBindEventArgs(binding.Name, isRebind, ex));
            throw;
        }
        finally
        {
            _pendingBinds.TryRemove(new KeyValuePair<string, TaskCompletionSource<BindResult>>(binding.BindId, answer));
        }
    }

    private void FailPendingBinds(TunnelException reason)
    {
        foreach (var pending in _pendingBinds.Values)
        {
            pending.TrySetException(reason);
        }
    }

    private void RemoveBinding(EndpointBinding binding, Exception? reason = null)
    {
        binding.Close(reason);
        _bindingsById.TryRemove(binding.BindId, out _);
        _bindingsByName.TryRemove(new KeyValuePair<string, EndpointBinding>(binding.Name, binding));
    }

    /// <summary>
    /// Unbinds <paramref name="binding"/>: no new connections from the moment it returns. When the endpoint was bound,
    /// waits (up to <see cref="TunnelSessionOptions.RequestTimeout"/>) for the relay to confirm it removed the route, so
    /// a public client connecting afterwards is refused by the relay rather than offered here. Never throws: an
    /// unanswered unbind is logged, and the relay forgets the bind with the session anyway.
    /// </summary>
    internal async ValueTask UnbindAsync(EndpointBinding binding, bool awaitRelay = true)
    {
        if (binding.IsClosed)
        {
            return;
        }

        var wasBound = binding.IsBound;
        RemoveBinding(binding);
        var run = _run;
        TaskCompletionSource? confirmed = null;
        if (wasBound && awaitRelay && run is not null && !run.HasEnded)
        {
            confirmed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _pendingUnbinds[binding.BindId] = confirmed;
        }

        var sent = run?.Connection.Send(new AgentMessage { Unbind = new Unbind { BindId = binding.BindId } }) ?? false;
        if (confirmed is not null)
        {
            try
            {
                if (sent)
                {
                    await confirmed.Task.WaitAsync(Options.RequestTimeout, Options.TimeProvider, run!.Connection.Lifetime).ConfigureAwait(false);
                }
            }
            catch (ObjectDisposedException)
            {
                // The connection was disposed meanwhile: the relay forgets the bind with it.
            }
            catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
            {
                SessionLog.UnbindUnconfirmed(_logger, binding.Name, Options.RequestTimeout);
            }
            finally
            {
                _pendingUnbinds.TryRemove(new KeyValuePair<string, TaskCompletionSource>(binding.BindId, confirmed));
            }
        }

        if (wasBound)
        {
            SessionLog.EndpointUnbound(_logger, binding.Name);
        }
    }
}
