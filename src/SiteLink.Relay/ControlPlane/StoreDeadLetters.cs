using Microsoft.Extensions.DependencyInjection;
using SiteLink.Relay.ControlPlane.Store;
using SiteLink.Relay.Events;

namespace SiteLink.Relay.ControlPlane;

/// <summary>
/// Dead letters kept in the control plane's store (so the admin API lists them, whichever replica gave up on them),
/// or in memory until the store is open.
/// </summary>
/// <param name="services">The relay's services: the control plane is resolved at the first dead letter (it depends, through the event hub, on this).</param>
internal sealed class StoreDeadLetters(IServiceProvider services) : IDeadLetterStore
{
    private readonly InMemoryDeadLetterStore _beforeStart = new();

    public async ValueTask AddAsync(DeadLetter letter, CancellationToken cancellationToken)
    {
        if (services.GetRequiredService<ControlPlane>().Store is not { } store)
        {
            await _beforeStart.AddAsync(letter, cancellationToken).ConfigureAwait(false);
            return;
        }

        await store.AddDeadLetterAsync(new StoredDeadLetter(0, letter.SubscriptionId, letter.Tenant, letter.EventId, letter.EventType, letter.Payload, letter.Error, letter.Attempts, letter.At), cancellationToken).ConfigureAwait(false);
    }
}
