using System.Runtime.CompilerServices;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>Every awaited call in a test is bounded, so a hang fails fast with the call's name instead of stalling CI.</summary>
internal static class TaskTimeoutExtensions
{
    public static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    public static async Task DefaultTimeout(this Task task, [CallerArgumentExpression(nameof(task))] string? what = null)
    {
        try
        {
            await task.WaitAsync(Limit);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"Timed out after {Limit}: {what}", ex);
        }
    }

    public static async Task<T> DefaultTimeout<T>(this Task<T> task, [CallerArgumentExpression(nameof(task))] string? what = null)
    {
        try
        {
            return await task.WaitAsync(Limit);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"Timed out after {Limit}: {what}", ex);
        }
    }

    public static Task DefaultTimeout(this ValueTask task, [CallerArgumentExpression(nameof(task))] string? what = null) =>
        task.AsTask().DefaultTimeout(what);

    public static Task<T> DefaultTimeout<T>(this ValueTask<T> task, [CallerArgumentExpression(nameof(task))] string? what = null) =>
        task.AsTask().DefaultTimeout(what);
}
