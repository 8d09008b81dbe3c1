using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>A log entry captured during a test.</summary>
internal sealed record LogEntry(string Category, LogLevel Level, EventId EventId, string Message, Exception? Exception)
{
    public DateTime At { get; } = DateTime.UtcNow;
}

/// <summary>
/// Captures the logs of the relay and the SDK during a test, so tests can assert that a failure was logged, and echoes
/// warnings and errors to the test's progress output.
/// </summary>
internal sealed class TestLogSink : ILoggerProvider
{
    private readonly ConcurrentQueue<LogEntry> _entries = new();

    public IReadOnlyCollection<LogEntry> Entries => _entries;

    public ILoggerFactory CreateFactory() => LoggerFactory.Create(builder =>
    {
        builder.SetMinimumLevel(LogLevel.Debug);
        builder.AddProvider(this);
    });

    public void AddTo(ILoggingBuilder builder)
    {
        builder.SetMinimumLevel(LogLevel.Debug);
        builder.AddProvider(this);
    }

    public bool Contains(string category, EventId eventId) =>
        _entries.Any(e => e.Category.Contains(category, StringComparison.Ordinal) && e.EventId.Id == eventId.Id);

    public ILogger CreateLogger(string categoryName) => new SinkLogger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class SinkLogger(TestLogSink sink, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Debug;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var message = formatter(state, exception);
            sink._entries.Enqueue(new LogEntry(category, logLevel, eventId, message, exception));
            if (logLevel >= LogLevel.Warning || Environment.GetEnvironmentVariable("SITELINK_TEST_LOGS") == "1")
            {
                TestContext.Progress.WriteLine($"{DateTime.UtcNow:HH:mm:ss.fff} [{logLevel}] {category}: {message}");
            }
        }
    }
}
