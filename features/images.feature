@fault
Feature: Images are part of the conversation
  A picture a user shares is checked, stripped of its metadata and kept in
  the media store by its content hash; the message that carried it records
  that hash, so the picture is in the context like the words around it, and
  survives what the words survive. "forget me" deletes a user's pictures
  with the rest of their data.

  Background:
    Given the plugins "memory, sessions, images" are enabled
    And the bot is running

  Scenario: An image shared earlier is still in the context after a Redis flush
    Given alice shares a photo with GPS data in #general saying "this is my cat"
    And alice says "cute, right?" in #general
    When Redis is flushed
    Then the bot's context for alice in #general holds these messages in this order:
      | author | content           |
      | alice  | this is my cat    |
      | bot    | ok this is my cat |
      | alice  | cute, right?      |
      | bot    | ok cute, right?   |
    And in the bot's context for alice in #general, "this is my cat" carries a 20x40 JPEG image
    And the stored copy of that image has no GPS data

  Scenario: An image shared earlier is still in the context after a restart
    Given alice shares a photo with GPS data in #general saying "my garden"
    When the bot restarts
    And Redis is flushed
    Then in the bot's context for alice in #general, "my garden" carries a 20x40 JPEG image
    And the stored copy of that image has no GPS data

  Scenario: A file that only pretends to be an image is refused and nothing is stored
    When alice shares a text file named "cat.png" in #general saying "look"
    Then the reply to "look" contains "is not an image I accept"
    And the bot's context for alice in #general is empty
    And the database holds exactly 0 messages for alice in #general

  Scenario: forget deletes my images
    Given alice shares a photo with GPS data in #general saying "my cat"
    And bob shares another photo in #general saying "my dog"
    When alice says "/forget confirm" in #general
    Then the reply to "/forget confirm" contains "image_files"
    And alice's images are gone from the media store
    And bob's images are still in the media store
    And the bot's context for alice in #general is empty
