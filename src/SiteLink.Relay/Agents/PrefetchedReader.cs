using Grpc.Core;
using SiteLink.Internal;

namespace SiteLink.Relay.Agents;

/// <summary>
/// A data call's request stream with its first read already started (while the call was parked). The first
/// <see cref="MoveNext"/> returns that read, cancellable like any other; later ones read on.
/// </summary>
internal sealed class PrefetchedReader : IAsyncStreamReader<DataFrame>, IDisposable
{
    private readonly IAsyncStreamReader<DataFrame> _inner;
    private readonly CancellationTokenSource _cancel;
    private Task<bool>? _pending;

    public PrefetchedReader(IAsyncStreamReader<DataFrame> inner, CancellationToken callToken)
    {
        _inner = inner;
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(callToken);
        Prefetch = inner.MoveNext(_cancel.Token);
        _pending = Prefetch;
    }

    /// <summary>The read started when the call was parked.</summary>
    public Task<bool> Prefetch { get; }

    public DataFrame Current => _inner.Current;

    public async Task<bool> MoveNext(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _pending, null) is not { } first)
        {
            return await _inner.MoveNext(cancellationToken).ConfigureAwait(false);
        }

        using (cancellationToken.Register(static state => CancelQuietly((CancellationTokenSource)state!), _cancel))
        {
            return await first.ConfigureAwait(false);
        }
    }

    /// <summary>Cancels the first read if nobody took it (its outcome is observed, so it never goes unnoticed).</summary>
    public void Dispose()
    {
        CancelQuietly(_cancel);
        if (Interlocked.Exchange(ref _pending, null) is { } untaken)
        {
            _ = untaken.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    private static void CancelQuietly(CancellationTokenSource source)
    {
        try
        {
            source.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }
}
