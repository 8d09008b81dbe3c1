using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using SiteLink.Internal;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Diagnostics;
using SiteLink.Relay.Security;

namespace SiteLink.Relay.Agents;

/// <summary>
/// Guards the agent port's connections before and after they authenticate: a cap on connections in all and per client
/// address, a deadline for the first authenticated call, and a budget of wasted calls (failed authentication, refused
/// or unknown calls, streams reset before they did anything) whose exhaustion closes the connection. Runs as Kestrel
/// connection middleware (<see cref="OnConnectionAsync"/>) and as request middleware (<see cref="OnRequestAsync"/>).
/// </summary>
internal sealed class AgentConnections : IDisposable
{
    private readonly RelayLimits _limits;
    private readonly RelayCounters _counters;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, AgentConnection> _byId = new(StringComparer.Ordinal);
    private readonly KeyedCounter<IPAddress> _perAddress = new();
    private readonly Dictionary<IPAddress, long> _cooling = [];
    private readonly Lock _gate = new();
    private readonly LogSampler _refusals;
    private readonly LogSampler _closures;
    private int _total;

    public AgentConnections(RelayOptions options, RelayCounters counters, TimeProvider timeProvider, ILogger<AgentConnections> logger)
    {
        _limits = options.Limits;
        _counters = counters;
        _timeProvider = timeProvider;
        _logger = logger;
        _refusals = new LogSampler(timeProvider, TimeSpan.FromSeconds(10), (count, interval) => RelayLog.AgentConnectionsRefusedSummary(_logger, count, interval));
        _closures = new LogSampler(timeProvider, TimeSpan.FromSeconds(10), (count, interval) => RelayLog.AgentConnectionsClosedSummary(_logger, count, interval));
    }

    public void Dispose()
    {
        _refusals.Dispose();
        _closures.Dispose();
    }

    /// <summary>Agent-port connections open now.</summary>
    public int Count => Volatile.Read(ref _total);

    /// <summary>The connection a call came on; null when it is not (or no longer) tracked.</summary>
    public AgentConnection? Find(HttpContext context) => _byId.TryGetValue(context.Connection.Id, out var connection) ? connection : null;

    /// <summary>Kestrel connection middleware: admits the connection or closes it at once, and tracks it while it lives.</summary>
    public async Task OnConnectionAsync(ConnectionContext context, ConnectionDelegate next)
    {
        var address = ClientAddress.KeyOf(context.RemoteEndPoint);
        if (TryAdmit(address) is { } refusal)
        {
            _counters.OnAgentConnectionRefused(refusal.Kind);
            if (_refusals.ShouldLog(out var suppressed))
            {
                RelayLog.AgentConnectionRefused(_logger, context.RemoteEndPoint?.ToString() ?? "unknown", refusal.Message, suppressed);
            }

            context.Abort(new ConnectionAbortedException(refusal.Message));
            return;
        }

        var connection = new AgentConnection(context, this);
        _byId[context.ConnectionId] = connection;
        try
        {
            connection.StartPreAuthenticationTimer(_timeProvider, _limits.PreAuthenticationTimeout);
            await next(context).ConfigureAwait(false);
        }
        finally
        {
            _byId.TryRemove(context.ConnectionId, out _);
            connection.Dispose();
            Release(address);
        }
    }

    /// <summary>
    /// Request middleware: every call on the agent port that ends without doing anything useful spends from its
    /// connection's failure budget.
    /// </summary>
    public async Task OnRequestAsync(HttpContext context, RequestDelegate next)
    {
        var accounting = new CallAccounting();
        context.Features.Set(accounting);
        await next(context).ConfigureAwait(false);
        if (!accounting.Productive)
        {
            Find(context)?.OnWastedCall(context.RequestAborted.IsCancellationRequested ? "streams reset before they did anything" : "failed or refused calls");
        }
    }

    /// <summary>Addresses remembered in cooldown at most (a flood from more addresses than this is not remembered past it).</summary>
    private const int MaxCoolingAddresses = 100_000;

    private (string Kind, string Message)? TryAdmit(IPAddress address)
    {
        lock (_gate)
        {
            if (_cooling.TryGetValue(address, out var until))
            {
                if (_timeProvider.GetTimestamp() < until)
                {
                    return ("address_cooldown", $"{address} exhausted MaxFailedCallsPerConnection and cools down for {_limits.AbusiveAddressCooldown} (AbusiveAddressCooldown)");
                }

                _cooling.Remove(address);
            }

            if (_total >= _limits.MaxAgentConnections)
            {
                return ("connection_limit", $"the agent port holds {_total} connections (limit MaxAgentConnections)");
            }

            if (!_perAddress.TryIncrement(address, _limits.MaxAgentConnectionsPerIp))
            {
                return ("address_limit", $"{address} holds {_perAddress[address]} connections (limit MaxAgentConnectionsPerIp)");
            }

            _total++;
            return null;
        }
    }

    private void Release(IPAddress address)
    {
        lock (_gate)
        {
            _total--;
            _perAddress.Decrement(address);
        }
    }

    private void OnClosed(AgentConnection connection, string reason, string counterReason)
    {
        if (counterReason == "failed_calls" && _limits.AbusiveAddressCooldown > TimeSpan.Zero)
        {
            var until = _timeProvider.GetTimestamp() + (long)(_limits.AbusiveAddressCooldown.TotalSeconds * _timeProvider.TimestampFrequency);
            lock (_gate)
            {
                if (_cooling.Count >= MaxCoolingAddresses)
                {
                    var now = _timeProvider.GetTimestamp();
                    foreach (var expired in _cooling.Where(e => e.Value <= now).Select(e => e.Key).ToArray())
                    {
                        _cooling.Remove(expired);
                    }
                }

                if (_cooling.Count < MaxCoolingAddresses)
                {
                    _cooling[connection.Address] = until;
                }
            }
        }

        _counters.OnAgentConnectionClosed(counterReason);
        if (_closures.ShouldLog(out var suppressed))
        {
            RelayLog.AgentConnectionClosed(_logger, connection.Peer, reason, suppressed);
        }
    }

    /// <summary>One connection on the agent port.</summary>
    internal sealed class AgentConnection : IDisposable
    {
        private readonly ConnectionContext _context;
        private readonly AgentConnections _owner;
        private readonly FailureBudget _budget;
        private ITimer? _preAuthentication;
        private int _authenticated;
        private int _closed;
        private int _sessions;

        public AgentConnection(ConnectionContext context, AgentConnections owner)
        {
            _context = context;
            _owner = owner;
            _budget = new FailureBudget(owner._limits.MaxFailedCallsPerConnection, owner._timeProvider);
            Peer = context.RemoteEndPoint?.ToString() ?? "unknown";
            Address = ClientAddress.KeyOf(context.RemoteEndPoint);
        }

        public string Peer { get; }

        /// <summary>The address its limits count it under.</summary>
        public IPAddress Address { get; }

        public bool IsAuthenticated => Volatile.Read(ref _authenticated) != 0;

        public void StartPreAuthenticationTimer(TimeProvider timeProvider, TimeSpan timeout)
        {
            var timer = timeProvider.CreateTimer(
                static state =>
                {
                    var connection = (AgentConnection)state!;
                    if (!connection.IsAuthenticated)
                    {
                        connection.Close($"no authenticated call within {connection._owner._limits.PreAuthenticationTimeout}", "pre_authentication_timeout");
                    }
                },
                this,
                Timeout.InfiniteTimeSpan,
                Timeout.InfiniteTimeSpan);
            Volatile.Write(ref _preAuthentication, timer);
            if (!IsAuthenticated)
            {
                timer.Change(timeout, Timeout.InfiniteTimeSpan);
            }
        }

        /// <summary>A call on this connection presented a valid authtoken: the pre-authentication deadline no longer applies.</summary>
        public void OnAuthenticated()
        {
            if (Interlocked.Exchange(ref _authenticated, 1) == 0)
            {
                Volatile.Read(ref _preAuthentication)?.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            }
        }

        /// <summary>A session started on this connection; returns how many have so far.</summary>
        public int OnSessionStarted() => Interlocked.Increment(ref _sessions);

        public void OnWastedCall(string what)
        {
            if (!_budget.TrySpend())
            {
                Close($"too many {what} (limit MaxFailedCallsPerConnection)", "failed_calls");
            }
        }

        private void Close(string reason, string counterReason)
        {
            if (Interlocked.Exchange(ref _closed, 1) != 0)
            {
                return;
            }

            _owner.OnClosed(this, reason, counterReason);
            _context.Abort(new ConnectionAbortedException(reason));
        }

        public void Dispose() => Volatile.Read(ref _preAuthentication)?.Dispose();
    }
}

/// <summary>Set on each agent-port call: the service marks a call that did something useful.</summary>
internal sealed class CallAccounting
{
    public bool Productive { get; set; }
}
