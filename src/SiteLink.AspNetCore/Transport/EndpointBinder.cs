using Microsoft.Extensions.Logging;

namespace SiteLink.AspNetCore.Transport;

/// <summary>
/// Binds a listener endpoint for Kestrel's start. A session still connecting accepts the bind at once and binds it
/// later, so a refusal would only surface after the server started: this waits (up to the bind timeout) for the
/// relay's first answer, so a refused name or a faulted session fails the start with its typed exception instead.
/// </summary>
internal static class EndpointBinder
{
    public static async Task<ITunnelListener> ListenAsync(ITunnelSession session, SiteLinkEndPoint endPoint, TimeSpan bindTimeout, ILogger logger, CancellationToken cancellationToken)
    {
        var name = endPoint.EndpointName;
        var bound = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnBindCompleted(object? sender, TunnelBindEventArgs e)
        {
            if (e.Error is null && string.Equals(e.EndpointName, name, StringComparison.Ordinal))
            {
                bound.TrySetResult();
            }
        }

        // Subscribed before binding, so an answer that comes while ListenAsync returns is not missed.
        session.BindCompleted += OnBindCompleted;
        try
        {
            var listener = await session.ListenAsync(name, endPoint.Options, cancellationToken).ConfigureAwait(false);
            if (listener.IsBound || bindTimeout == TimeSpan.Zero)
            {
                TransportLog.Listening(logger, name, listener.IsBound);
                return listener;
            }

            try
            {
                await Task.WhenAny(bound.Task, listener.Completion).WaitAsync(bindTimeout, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                TransportLog.NotBoundYet(logger, name, bindTimeout, session.State);
                return listener;
            }
            catch (OperationCanceledException)
            {
                await listener.DisposeAsync().ConfigureAwait(false);
                throw;
            }

            if (listener.Completion.IsCompleted)
            {
                // Refused (TunnelBindException), or the session faulted or closed: the endpoint is gone already.
                await listener.Completion.ConfigureAwait(false);
                throw new TunnelConnectionException($"SiteLink endpoint '{name}' was unbound before the relay bound it (session {session.State}).");
            }

            TransportLog.Listening(logger, name, bound: true);
            return listener;
        }
        finally
        {
            session.BindCompleted -= OnBindCompleted;
        }
    }
}
