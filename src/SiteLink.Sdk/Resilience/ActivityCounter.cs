namespace SiteLink.Resilience;

/// <summary>Counts things in progress (tunnelled connections) and lets a drain wait until none are left.</summary>
internal sealed class ActivityCounter
{
    private readonly object _gate = new();
    private int _count;
    private TaskCompletionSource? _idle;

    public int Count => Volatile.Read(ref _count);

    public void Increment()
    {
        lock (_gate)
        {
            _count++;
        }
    }

    public void Decrement()
    {
        TaskCompletionSource? idle = null;
        lock (_gate)
        {
            if (--_count == 0)
            {
                idle = _idle;
                _idle = null;
            }
        }

        idle?.TrySetResult();
    }

    /// <summary>Completes when the count is zero (at once if it already is).</summary>
    public Task WhenIdleAsync()
    {
        lock (_gate)
        {
            if (_count == 0)
            {
                return Task.CompletedTask;
            }

            _idle ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _idle.Task;
        }
    }
}
