using System.Diagnostics;

namespace SiteLink.FunctionalTests.Infrastructure;

internal static class Eventually
{
    /// <summary>Polls <paramref name="condition"/> until it holds; fails the test after the default timeout.</summary>
    public static async Task WaitUntilAsync(Func<bool> condition, string? what = null)
    {
        var elapsed = Stopwatch.StartNew();
        while (!condition())
        {
            if (elapsed.Elapsed > TaskTimeoutExtensions.Limit)
            {
                Assert.Fail($"Not true within {TaskTimeoutExtensions.Limit}: {what ?? "condition"}");
            }

            await Task.Delay(10);
        }
    }

    /// <summary>As <see cref="WaitUntilAsync(Func{bool}, string?)"/>, for a condition that has to ask something (every 100 ms).</summary>
    public static async Task WaitUntilAsync(Func<Task<bool>> condition, string? what = null)
    {
        var elapsed = Stopwatch.StartNew();
        while (!await condition())
        {
            if (elapsed.Elapsed > TaskTimeoutExtensions.Limit)
            {
                Assert.Fail($"Not true within {TaskTimeoutExtensions.Limit}: {what ?? "condition"}");
            }

            await Task.Delay(100);
        }
    }
}
