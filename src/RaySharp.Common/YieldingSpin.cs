namespace RaySharp.Common;

/// <summary>
/// Waits for a hand-off expected within microseconds (a reply to a call just sent, the next call of a busy actor) by
/// yielding the CPU in a loop before blocking. Unlike the runtime's spin-waits, which mostly busy-loop, each turn here
/// gives the core to whatever is runnable (on a machine with few cores, often the very thread that will complete the
/// wait), and the waiter stays awake so that no sleeping core has to be woken for the hand-off.
/// </summary>
internal static class YieldingSpin
{
    /// <summary>Yields before blocking; RAYSHARP_SPIN_YIELDS overrides (0: block at once). Default 100 (tens of microseconds).</summary>
    public static readonly int Yields = int.TryParse(Environment.GetEnvironmentVariable("RAYSHARP_SPIN_YIELDS"), out var n) && n >= 0 ? n : 100;

    /// <summary>True once <paramref name="ready"/> holds; false when the yields ran out first (then block).</summary>
    public static bool Until<TState>(Func<TState, bool> ready, TState state)
    {
        for (var i = 0; i < Yields; i++)
        {
            if (ready(state)) return true;
            Thread.Yield();
        }
        return ready(state);
    }
}
